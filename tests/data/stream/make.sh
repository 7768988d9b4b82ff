#!/bin/sh
# Regenerates the stream test fixtures (ffmpeg 5.1 and libjpeg-turbo-progs 2.1, Debian 12).
# The tests read the files, not this script: run it only to remake them.
set -eu
cd "$(dirname "$0")"
q="-hide_banner -loglevel error -y"
# 20 frames of ffmpeg's test pattern as a concatenated MJPEG stream.
ffmpeg $q -f lavfi -i testsrc=size=320x240:rate=10 -frames:v 20 -q:v 8 -f mjpeg testsrc_320x240_20.mjpeg
# 3 raw frames at an odd size in each planar/packed layout the raw reader knows.
for f in nv12 yuv420p rgb24 bgr24 gray; do
  ffmpeg $q -f lavfi -i testsrc=size=33x17:rate=10 -frames:v 3 -pix_fmt $f -f rawvideo raw_33x17_3.$f
done
ffmpeg $q -f lavfi -i testsrc=size=34x17:rate=10 -frames:v 3 -pix_fmt yuyv422 -f rawvideo raw_34x17_3.yuyv422
# Progressive JPEGs (several SOS scans before EOI), one with restart markers inside the scans.
ffmpeg $q -f lavfi -i testsrc=size=96x64:rate=10 -frames:v 1 -f image2 -c:v ppm base.ppm
cjpeg -progressive -quality 80 base.ppm > progressive.jpg
cjpeg -progressive -restart 1 -quality 80 base.ppm > progressive_restart.jpg
cjpeg -restart 1 -quality 80 base.ppm > baseline_restart.jpg
rm base.ppm
