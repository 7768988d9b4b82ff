/* Classify raw NV12 frames read from stdin (as ffmpeg writes them) with tipedge's C ABI and
 * print the best class of each, one line per frame: "<frame> <label> <probability>".
 *
 *   ffmpeg -i video.mp4 -f rawvideo -pix_fmt nv12 -s 640x480 - |
 *       ./classify_frames models/fixtures/efficientnet-lite0 textile.pack 640 480
 *
 * Build against an installed tipedge (capi/install.sh):
 *   cc classify_frames.c $(pkg-config --cflags --libs tipedge) -o classify_frames
 */
#include <stdio.h>
#include <stdlib.h>

#include <tipedge.h>

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s MODEL PACK WIDTH HEIGHT < frames.nv12\n", argv[0]);
        return 2;
    }
    unsigned width = (unsigned)strtoul(argv[3], NULL, 10);
    unsigned height = (unsigned)strtoul(argv[4], NULL, 10);
    size_t frame_len = (size_t)width * height * 3 / 2;
    if (width == 0 || height == 0 || width % 2 || height % 2) {
        fprintf(stderr, "%s: NV12 needs a positive, even width and height\n", argv[0]);
        return 2;
    }

    tipedge_session *session = NULL;
    struct tipedge_options options = tipedge_options_default();
    options.top_k = 1;
    if (tipedge_session_open(argv[1], argv[2], &options, &session) != TIPEDGE_STATUS_OK) {
        fprintf(stderr, "%s: %s\n", argv[0], tipedge_last_error());
        return 1;
    }

    unsigned char *frame = malloc(frame_len);
    if (!frame) {
        tipedge_session_free(session);
        return 1;
    }
    struct tipedge_prediction p; /* written by tipedge: nothing to free per frame */
    int bad = 0;
    while (fread(frame, 1, frame_len, stdin) == frame_len) {
        enum tipedge_status st = tipedge_session_classify(session, frame, frame_len, width, height,
                                                          0, TIPEDGE_FORMAT_NV12, &p);
        if (st != TIPEDGE_STATUS_OK) {
            fprintf(stderr, "%s\n", tipedge_last_error()); /* names the frame; go on */
            bad++;
            continue;
        }
        printf("%llu %s %.6f\n", (unsigned long long)p.frame,
               tipedge_session_class_name(session, p.top[0].class_index), p.top[0].prob);
    }
    free(frame);
    tipedge_session_free(session);
    return bad ? 3 : 0;
}
