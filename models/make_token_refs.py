#!/usr/bin/env python3
"""Reference token ids for tipedge's Rust CLIP tokenizer (src/text/mod.rs).

Writes models/fixtures/reference/tokens.json:

    {"generator": "open_clip <version>", "context_length": 77,
     "cases": [{"text": "...", "ids": [77 ints]}, ...]}

The ids come from ``open_clip.tokenize`` (OpenAI's SimpleTokenizer, default
``clean='lower'``).  tests/tokenizer.rs asserts the Rust tokenizer reproduces
every case exactly.

The case list is deterministic: hand-written strings covering the parity
details (prompt templates, apostrophes, digits, whitespace, accents, scripts,
emoji, HTML entities, curly quotes, ligatures, full-width forms, control
characters, literal special tokens, truncation, ...) plus strings drawn from a
fixed-seed RNG over a varied character pool.

Known, documented exclusion: the Rust side does not implement ftfy's mojibake
repair (``fix_encoding``).  Every case is checked to be unaffected by it
(``ftfy.fix_text(s) == ftfy.fix_text(s, fix_encoding=False)``); hand-written
cases that fail the check abort the script, random ones are skipped and
counted (printed on stderr).  Random strings only use characters assigned in
Python's Unicode database (unicodedata 14.0 for Python 3.11), because Rust's
std / regex / unicode-normalization tables are newer.

Usage (from the repository root, in the venv of models/requirements.txt --
open_clip_torch 3.3.0, ftfy 6.3.1, Python 3.11; deterministic, ~10 s):

    .venv/bin/python models/make_token_refs.py      # writes the fixture
    .venv/bin/python models/make_token_refs.py --emit-html-entities src/text/html_entities.rs

`--n-random N --seed S --out PATH` write a larger ad-hoc set for extra checks
(point a copy of tests/tokenizer.rs at it).
"""
import argparse
import html.entities
import json
import os
import random
import sys
import unicodedata

CONTEXT_LENGTH = 77
SEED = 20240611
N_RANDOM = 150

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "fixtures", "reference", "tokens.json")

# --------------------------------------------------------------------------
# Hand-written cases
# --------------------------------------------------------------------------

CLASSES = [
    "dog", "cat", "golden retriever", "tabby cat", "great white shark",
    "African bush elephant", "jack-o'-lantern", "Granny Smith", "T-shirt",
    "yellow lady's slipper", "14-inch laptop", "crème brûlée", "Saint Bernard",
    "CD player", "hen-of-the-woods", "cassette_player",
]

# Tip-Adapter / CoOp style prompts and a selection of CLIP's ImageNet templates.
TEMPLATES = [
    "a photo of a {}.",
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a pixelated photo of the {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a close-up photo of a {}.",
    "a 3D rendering of the {}.",
    "a plushie {}.",
    "an origami {}.",
    "a {} in a video game.",
    "itap of a {}.",
    "art of the {}.",
    "a toy {}.",
    "a centered satellite photo of {}.",
    "a photo of a {}, a type of pet.",
    "a photo of a {}, a type of flower.",
    "a photo of {}, a type of food.",
    "a photo of a {}, a type of aircraft.",
    "{} texture.",
    "a photo of a person doing {}.",
]

HANDWRITTEN = [
    # basics
    "", " ", "     ", "\t\n  \r\n", "a", "A", "a photo of a dog.", "A PHOTO OF A DOG.",
    "a photo of a dog", "  a photo of a dog.  ", "a  photo\tof\na\r\ndog",
    "Hello, World!", "hello world", "HeLLo WoRLD",
    # punctuation runs
    "!!!???", "...", "wait... what?!", "--==**##", "(a) [b] {c} <d>", "a/b\\c|d",
    "\"quoted\" 'single'", "~`@#$%^&*_+-=", "hello!!! world???", ".,;:", "__init__",
    # apostrophes / contractions
    "it's", "don't", "we're", "they've", "i'm", "you'll", "he'd", "IT'S DON'T WE'RE",
    "rock'n'roll", "'s 't 're 've 'm 'll 'd", "o'clock", "the dog's bone", "'twas",
    "ma'am", "y'all'd've", "''", "'", "don''t", "it’s a dog’s life",
    # digits
    "1234567", "3.14159", "1,000,000", "2nd place", "the 1990s", "x86_64", "0", "007",
    "٣٤٥", "١٢ apples", "²³", "½ cup", "Ⅻ", "①②③", "१२३",
    # whitespace
    "a\u00a0b", "a\u2003b", "a\u3000b", "\u2028line\u2029para", "tab\tseparated\tvalues",
    "trailing newline\n", "\n\nleading newlines", "a\x0bb\x0cc",
    # accents, composition
    "café", "naïve", "Ångström", "cafe\u0301", "Ångstro\u0308m", "A\u030angstrom",
    "crème brûlée", "Zürich", "São Paulo", "Dvořák", "Łódź", "İstanbul", "straße", "STRASSE",
    "ΣΊΣΥΦΟΣ", "ΌΣΟΣ", "\u0301", "e\u0301\u0301", "a\u0345", "\u0345",
    # scripts
    "東京タワーの写真", "一只猫的照片", "고양이 사진", "صورة قطة", "कुत्ते की तस्वीर",
    "фотография собаки", "φωτογραφία ενός σκύλου", "תמונה של כלב", "ภาพถ่ายของแมว",
    "Ṁüñçhèñ", "ǅemal", "ﬁsh ﬂag ﬀ ﬃ ﬄ ﬅ ﬆ", "Ĳssel", "ŉ",
    # emoji
    "a photo of a 🐶", "🐶🐱🐭", "👨‍👩‍👧‍👦 family", "👍🏽 thumbs", "🇫🇷🇯🇵 flags", "🏳️‍🌈",
    "❤️", "☕ coffee", "🏴\U000e0067\U000e0062\U000e0077\U000e006c\U000e0073\U000e007f",
    # symbols
    "∑ x² ≤ ∞", "α + β = γ", "→ ← ↑ ↓", "© ® ™", "€100 £50 ¥20", "°C 37.5°",
    "∀x∃y", "½ ¼ ¾", "♠♥♦♣", "✓ ✗", "•·…",
    # HTML entities
    "&amp;", "&lt;b&gt;bold&lt;/b&gt;", "it&#39;s", "caf&eacute;", "&quot;hi&quot;",
    "&nbsp;x&nbsp;", "&copy; 2024", "&hellip;", "&mdash; &ndash;", "&lsquo;q&rsquo; &ldquo;q&rdquo;",
    "&#x41;&#66;&#x1F600;", "&amp;amp;", "&amp;amp;amp;lt;", "&EACUTE;", "&eacute", "&copy2024",
    "&notit;", "&notin;", "&#0;", "&#x110000;", "&#xD800;", "&#128;", "&#150;", "&#1;",
    "&#65", "&#x42z", "&unknown;", "&", "&&&", "AT&T", "Q&A", "&amp", "fish &amp chips",
    "<b>&amp;</b>", "<p>caf&eacute;</p>", "a < b &amp; c", "&trade;&reg;&deg;",
    "&;", "&#;", "&#x;", "&ampamp;", "&#9;tab", "&#13;cr", "&AElig;&aelig", "&Jscr;ohn",
    # ftfy's unescaping stops at the first segment (line) containing '<'
    "x < y\n&amp;amp;amp;", "&amp;amp;amp;\n<b>x</b>", "<i>&rsquo;</i>", "&amp;rsquo;",
    "<p>e&#x301;</p>", "e&#x301;", "<&fflig;>", "&fflig;", "<&NTILDE;>", "&NTILDE;",
    "a&nbsp;&nbsp;b", "a&NewLine;b", "&Tab;x", "&#x2019;&#8217;", "&#xD83D;&#xDE00;",
    "\x1b[\u0663m", "\x1b]0;title\x07", "a\u0295\u03a3 b", "\u03a3\u0301\u03a3",
    # curly quotes / dashes
    "“quoted”", "‘single’", "‚low‛", "„low‟", "ʼokina", "— en – dash",
    # full-width / half-width
    "ＬＯＵＤ　ＮＯＩＳＥＳ", "ｆｕｌｌｗｉｄｔｈ １２３", "Ｕﾀｰﾝ", "ｶﾀｶﾅ", "￥１００", "￣",
    # control characters / escapes
    "a\x00b", "a\x07b", "a\x1bb", "\x1b[36;44mblue\x1b[0m", "\x1b[1mbold", "a\x7fb",
    "a\u200bb", "a\u200db", "a\ufeffb", "\ufeffbom", "a\u206ab", "a\ufffcb", "a\ufffdb",
    "zero\u200cwidth", "rtl\u200fmark", "a\x1cb\x1dc\x1ed\x1ff",
    "a\x80b", "a\x85b", "smart\x93quotes\x94", "a\x81b", "a\x9fb",
    # special tokens written in the text
    "<|startoftext|>", "<|endoftext|>", "a <|endoftext|> b", "<start_of_text>",
    "<end_of_text>", "x<end_of_text>y", "<START_OF_TEXT>", "<End_Of_Text>", "<start_of_text",
    "</w>", "a</w>b", "it'ſ", "<ſtart_of_text>", "ſ",
    # URLs, file names, code-ish
    "https://example.com/path?q=1&x=2#frag", "www.example.org", "IMG_20230101_123456.jpg",
    "my-photo (1).png", "C:\\Users\\me\\Pictures\\dog.jpeg", "user@example.com",
    "#hashtag @mention", "snake_case camelCase kebab-case", "v1.2.3-rc.4+build.5",
    # very long single words
    "supercalifragilisticexpialidocious",
    "pneumonoultramicroscopicsilicovolcanoconiosis",
    "a" * 300,
    "ab" * 200,
    "xyzzy" * 60,
    "Llanfairpwllgwyngyllgogerychwyrndrobwllllantysiliogogogoch",
    # over-long texts (truncated, EOT kept)
    " ".join(["dog"] * 100),
    "a photo of " * 30,
    "1" * 200,
    "🐶" * 80,
    " ".join(CLASSES) * 3,
    "!" * 500,
    "the quick brown fox jumps over the lazy dog " * 10,
    "x" * 10000,
]


def handwritten_cases():
    cases = list(HANDWRITTEN)
    for i, t in enumerate(TEMPLATES):
        cases.append(t.format(CLASSES[i % len(CLASSES)]))
    # A few templates with every kind of class name, underscores replaced as CoOp does.
    for c in CLASSES:
        cases.append("a photo of a {}.".format(c.replace("_", " ")))
    return cases


# --------------------------------------------------------------------------
# Random cases
# --------------------------------------------------------------------------

def _assigned(cp):
    return unicodedata.category(chr(cp)) not in ("Cn", "Cs", "Co")


def _pool():
    ranges = [
        (0x20, 0x7E, 30),      # ASCII printable (weighted)
        (0x00, 0x1F, 2),       # C0 controls
        (0x7F, 0x9F, 2),       # DEL + C1 controls
        (0xA0, 0x24F, 6),      # Latin-1, Latin Extended
        (0x250, 0x2FF, 1),     # IPA, modifier letters
        (0x300, 0x36F, 3),     # combining diacritics
        (0x370, 0x3FF, 3),     # Greek
        (0x400, 0x4FF, 3),     # Cyrillic
        (0x590, 0x5FF, 1),     # Hebrew
        (0x600, 0x6FF, 2),     # Arabic
        (0x900, 0x97F, 2),     # Devanagari
        (0xE00, 0xE7F, 1),     # Thai
        (0x1E00, 0x1EFF, 2),   # Latin Extended Additional
        (0x1F00, 0x1FFF, 2),   # Greek Extended
        (0x2000, 0x206F, 3),   # general punctuation (curly quotes, spaces, controls)
        (0x2070, 0x20CF, 1),   # super/subscripts, currency
        (0x2100, 0x218F, 2),   # letterlike, number forms
        (0x2190, 0x22FF, 2),   # arrows, math
        (0x2460, 0x24FF, 1),   # enclosed alphanumerics
        (0x2500, 0x27BF, 2),   # box drawing, dingbats
        (0x3000, 0x30FF, 3),   # CJK punctuation, kana
        (0x4E00, 0x4FFF, 3),   # CJK ideographs
        (0xAC00, 0xAD00, 2),   # Hangul
        (0xFB00, 0xFB06, 2),   # Latin ligatures
        (0xFE30, 0xFE6F, 1),   # CJK compat / small forms
        (0xFEFF, 0xFEFF, 1),   # BOM
        (0xFF00, 0xFFEF, 4),   # half/full width
        (0xFFF9, 0xFFFD, 1),   # specials
        (0x1D400, 0x1D4FF, 1), # math alphanumerics
        (0x1F300, 0x1F6FF, 4), # emoji
        (0x1F900, 0x1F9FF, 2), # emoji
        (0x1F3FB, 0x1F3FF, 1), # skin tones
        (0x1F1E6, 0x1F1FF, 1), # regional indicators
        (0xE0020, 0xE007F, 1), # tags
    ]
    buckets = []
    for lo, hi, w in ranges:
        chars = [chr(c) for c in range(lo, hi + 1) if _assigned(c)]
        buckets.append((chars, w))
    extras = ["\u200d", "\ufe0f", " ", " ", "  ", "\t", "\n", "\r\n", "'", "'s", "&amp;",
              "&lt;", "&#39;", "&eacute;", "&nbsp;", "<", "&", ";", "<end_of_text>",
              "\u2019", "\u201c", "\u201d", "\x1b[0m"]
    return buckets, extras


WORDS = [
    "photo", "Dog", "CAT", "tabby", "retriever", "bird's", "nest", "café", "naïve", "Ångström",
    "über", "jalapeño", "smörgåsbord", "crème", "brûlée", "façade", "résumé", "Zürich",
    "猫", "写真", "東京", "タワー", "고양이", "사진", "صورة", "قطة", "कुत्ता", "तस्वीर",
    "собака", "Фото", "σκύλος", "ΦΩΤΟ", "ΟΔΟΣ", "כלב", "แมว", "🐶", "🐱", "👍🏽", "👨‍👩‍👧",
    "🇯🇵", "❤️", "it's", "don't", "we're", "I'm", "they'll", "she'd", "you've", "rock'n'roll",
    "3.14", "2024", "1,000", "x86_64", "&amp;", "&lt;b&gt;", "&#39;", "&eacute;", "&nbsp;",
    "&hellip;", "&copy;", "“quote”", "‘single’", "ﬁsh", "ﬂower", "ＦＵＬＬ", "ｗｉｄｔｈ",
    "e\u0301", "a\u0308", "o\u0302\u0323", "<end_of_text>", "<start_of_text>",
    "https://example.com/a?b=c", "IMG_0001.JPG", "snake_case", "--", "...", "!?", "#tag",
]
SEPARATORS = [" ", " ", " ", "  ", "\t", "\n", "\r\n", ", ", ". ", "-", "/", "_", "", "\u00a0", "\u3000"]


def _noise_string(rng, buckets, extras, weights):
    length = rng.choice([1, 2, 3, 5, 8, 12, 20, 30, 45])
    parts = []
    for _ in range(length):
        if rng.random() < 0.12:
            parts.append(rng.choice(extras))
        else:
            chars, _ = rng.choices(buckets, weights)[0]
            parts.append(rng.choice(chars))
    return "".join(parts)


def _word_salad(rng):
    n = rng.randint(1, 12)
    out = []
    for i in range(n):
        w = rng.choice(WORDS)
        r = rng.random()
        if r < 0.15:
            w = w.upper()
        elif r < 0.3:
            w = w.capitalize()
        out.append(w)
        if i + 1 < n:
            out.append(rng.choice(SEPARATORS))
    s = "".join(out)
    if rng.random() < 0.3:
        s = rng.choice([" ", "  ", "\t", "\n"]) + s + rng.choice([" ", ".", "!", "?!", "\n"])
    return s


def _combining(rng, marks):
    base = "aeiouAEIOUcnsyzgkwCNSZ"
    n = rng.randint(1, 10)
    out = []
    for _ in range(n):
        out.append(rng.choice(base))
        for _ in range(rng.choice([0, 0, 1, 1, 2, 3])):
            out.append(rng.choice(marks))
        if rng.random() < 0.2:
            out.append(" ")
    return "".join(out)


def random_strings(n, rng):
    """Three flavours, in rotation: noise over the varied character pool, word
    salads (realistic words, entities, emoji, separators, random case) and
    letters with stacked combining marks (NFC composition/reordering)."""
    buckets, extras = _pool()
    weights = [w for _, w in buckets]
    marks = [chr(c) for c in range(0x300, 0x370)] + ["\u0323", "\u0327", "\u0345"]
    out = []
    while len(out) < n:
        k = len(out) % 3
        if k == 0:
            out.append(_noise_string(rng, buckets, extras, weights))
        elif k == 1:
            out.append(_word_salad(rng))
        else:
            out.append(_combining(rng, marks))
    return out


def touched_by_fix_encoding(ftfy, s):
    return ftfy.fix_text(s) != ftfy.fix_text(s, fix_encoding=False)


# --------------------------------------------------------------------------
# html_entities.rs
# --------------------------------------------------------------------------

def rust_str(s):
    """A Rust string literal: printable letters/digits/punctuation/symbols
    literally, everything else (combining marks, spaces, format characters)
    as \\u{..} escapes."""
    out = []
    for ch in s:
        cp = ord(ch)
        if ch == '"' or ch == "\\":
            out.append("\\" + ch)
        elif 0x20 < cp < 0x7F or (cp >= 0xA0 and unicodedata.category(ch)[0] in "LNPS"):
            out.append(ch)
        else:
            out.append("\\u{%x}" % cp)
    return '"' + "".join(out) + '"'


def emit_html_entities(path):
    """Writes Python's `html.entities.html5` as a sorted Rust table.

    ftfy's extra all-caps entities (`&EACUTE;`) are derived from it at run
    time by tokenizer.rs, so they are not stored."""
    html5 = html.entities.html5
    lines = [
        "//! HTML entity table for the CLIP tokenizer's text cleaning (see tokenizer.rs).",
        "//!",
        "//! GENERATED by `python models/make_token_refs.py --emit-html-entities "
        "src/text/html_entities.rs`",
        "//! from Python %s `html.entities.html5` (%d entries). Do not edit by hand."
        % (sys.version.split()[0], len(html5)),
        "",
        "/// `html.entities.html5` as (name, replacement), sorted by name (byte order) for",
        "/// binary search. Names include the trailing ';' where the standard has it; the",
        "/// legacy entities (`amp`, `lt`, `eacute`, ...) also appear without it.",
        "#[rustfmt::skip]",
        "pub(super) static HTML5: &[(&str, &str)] = &[",
    ]
    line = "   "
    for name in sorted(html5, key=lambda s: s.encode()):
        item = " (%s,%s)," % (rust_str(name), rust_str(html5[name]))
        if len(line) + len(item) > 96:
            lines.append(line)
            line = "   "
        line += item
    lines.append(line)
    lines.append("];")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print("wrote %s (%d entries)" % (path, len(html5)))


# --------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--n-random", type=int, default=N_RANDOM)
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--emit-html-entities", metavar="PATH")
    args = ap.parse_args()
    if args.emit_html_entities:
        emit_html_entities(args.emit_html_entities)
        return

    import ftfy
    import open_clip

    cases = handwritten_cases()
    bad = [c for c in cases if touched_by_fix_encoding(ftfy, c)]
    if bad:
        sys.exit("hand-written cases changed by ftfy.fix_encoding (not mirrored in Rust): %r" % bad)

    unique = list(dict.fromkeys(cases))  # drop duplicates, keep order
    n_hand = len(unique)
    seen = set(unique)

    rng = random.Random(args.seed)
    skipped = []
    randoms = []
    while len(randoms) < args.n_random:
        for s in random_strings(args.n_random - len(randoms), rng):
            if s in seen:
                continue
            if touched_by_fix_encoding(ftfy, s):
                skipped.append(s)
                continue
            seen.add(s)
            randoms.append(s)
    unique += randoms

    ids = open_clip.tokenize(unique, context_length=CONTEXT_LENGTH).tolist()
    doc = {
        "generator": "open_clip %s" % open_clip.__version__,
        "context_length": CONTEXT_LENGTH,
        "cases": [{"text": t, "ids": row} for t, row in zip(unique, ids)],
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    # One case per line keeps diffs of the fixture readable.
    with open(args.out, "w", encoding="utf-8") as f:
        f.write('{"generator": %s, "context_length": %d, "cases": [\n'
                % (json.dumps(doc["generator"]), CONTEXT_LENGTH))
        f.write(",\n".join(json.dumps(c, ensure_ascii=True, separators=(", ", ": "))
                           for c in doc["cases"]))
        f.write("\n]}\n")
    print("wrote %s: %d cases (%d hand-written, %d random; %d random strings skipped "
          "because ftfy.fix_encoding changes them)"
          % (args.out, len(unique), n_hand, len(randoms), len(skipped)))
    for s in skipped:
        print("  skipped (mojibake repair):", ascii(s), file=sys.stderr)


if __name__ == "__main__":
    main()
