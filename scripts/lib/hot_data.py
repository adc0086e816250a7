#!/usr/bin/env python3
"""Writes an LLD linker script placing the read-only data a profiled shim touched together.

Used by scripts/build-shim (see its header); not meant to be run by hand.

    hot_data.py LINK_MAP OUT_SCRIPT ADDRESSES...

LINK_MAP is the map LLD wrote (`-Map`) for the binary the profile ran; each ADDRESSES
file holds the hexadecimal data addresses one profiled worker read or wrote (lackey),
one per line, in any order. Each address inside an input section of the output section
`.rodata` names that section; the script lists those sections, in the order the files
are given (and by address within a file), in an output section `.rodata.hot` inserted
before `.rodata`. A relink with it places the ~240 KB a run that classifies a 429 reads
in ~6 windows of 64 KiB instead of 13 (the kernel maps a file 64 KiB around each
fault, so scattered data costs the whole span in every run's RSS).

Input sections are named as a linker script can match them: merged constants and
strings by family (`.rodata.str1.1` and every `.rodata.*.str1.1`: LLD merges them all
into one block named after its first input); sections whose
names are unique (`.rodata._ZN...E` jump tables, `.rodata..Lanon.<hash>.<n>` and
`.rodata.anon.<hash>...` constants) by name alone; any other (a C object's `.rodata`)
qualified by its file, `*libc.a:C-ctype.o(.rodata)` (an archive's member, `.a` or
`.rlib`) or `*<object>(.rodata)`. Characters a glob would read
(and `$`, `<`, `>`) are matched by `?`.
"""

import bisect
import re
import sys

# `VMA LMA Size Align Out In Symbol`: an output section's name follows the alignment
# after one space, an input section's after 9, a symbol's after 17.
MAP_LINE = re.compile(r"\s+([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)\s+\d+ ( *)(\S.*)$")
UNIQUE_NAME = re.compile(r"^\.rodata\.(?:_Z|_R|\.L|anon\.|unlikely\.)")
# LLD names an archive member `lib.a(member.o)` in its map, `lib.a:member.o` in a script.
ARCHIVE_MEMBER = re.compile(r"([^/]+\.(?:a|rlib))\(([^)]+)\)$")
# A section LLD made by merging strings or constants of one size and alignment from
# every input (`.rodata.str1.1`, `.rodata.cst16`): the map names it after its first
# input (`.rodata.sqlite3_sourceid.str1.8`), so it is matched by its family.
MERGED = re.compile(r"^\.rodata\.(?:.*\.)?(str\d+\.\d+|cst\d+)$")
# Rust's thin-LTO objects are named `<bin>-<hash>.<crate>-<hash>.<cgu>...`; the leading
# `<bin>-<hash>.` is left out of the match in case the relink names it otherwise.
RUST_OBJECT = re.compile(r"^[A-Za-z0-9_]+-[0-9a-f]{16}\.(.+)$")


def glob(text):
    return re.sub(r"[^A-Za-z0-9_.\-]", "?", text)


def rodata_sections(map_path):
    """(address, size, section, file) of each non-empty input section of `.rodata`."""
    sections = []
    output = None
    with open(map_path, encoding="utf-8", errors="replace") as lines:
        for line in lines:
            m = MAP_LINE.match(line)
            if not m:
                continue
            depth, what = len(m.group(3)), m.group(4)
            if depth == 0:
                output = what
                continue
            if output != ".rodata" or depth != 8 or ":(" not in what:
                continue
            size = int(m.group(2), 16)
            if size == 0:
                continue
            file, section = what.rsplit(":(", 1)
            sections.append((int(m.group(1), 16), size, section[:-1], file))
    sections.sort()
    return sections


def pattern(section, file):
    merged = MERGED.match(section) if file == "<internal>" else None
    if merged:
        family = merged.group(1)
        return "*(.rodata.%s .rodata.*.%s)" % (family, family)
    if file == "<internal>" or UNIQUE_NAME.match(section):
        return "*(%s)" % glob(section)
    member = ARCHIVE_MEMBER.search(file)
    if member:
        return "*%s:%s(%s)" % (glob(member.group(1)), glob(member.group(2)), glob(section))
    base = file.rsplit("/", 1)[-1]
    rust = RUST_OBJECT.match(base)
    return "*%s(%s)" % (glob(rust.group(1) if rust else base), glob(section))


def main(argv):
    if len(argv) < 4:
        sys.stderr.write("usage: hot_data.py LINK_MAP OUT_SCRIPT ADDRESSES...\n")
        return 2
    map_path, out_path, address_files = argv[1], argv[2], argv[3:]
    sections = rodata_sections(map_path)
    if not sections:
        sys.stderr.write("hot_data.py: %s lists no input section of .rodata\n" % map_path)
        return 1
    starts = [s[0] for s in sections]
    patterns, seen, touched = [], set(), 0
    for path in address_files:
        found = set()
        with open(path, encoding="ascii", errors="replace") as lines:
            for line in lines:
                try:
                    address = int(line.strip(), 16)
                except ValueError:
                    continue
                i = bisect.bisect_right(starts, address) - 1
                if i >= 0 and address < sections[i][0] + sections[i][1]:
                    found.add(i)
        for i in sorted(found):
            _, size, section, file = sections[i]
            p = pattern(section, file)
            if p not in seen:
                seen.add(p)
                patterns.append(p)
                touched += size
    if not patterns:
        sys.stderr.write("hot_data.py: no profiled address falls in .rodata\n")
        return 1
    with open(out_path, "w", encoding="utf-8") as out:
        out.write("/* Written by scripts/lib/hot_data.py: the read-only data a profiled run touched. */\n")
        # scripts/build-shim checks the relinked .rodata.hot holds 97% of this figure or more.
        out.write("/* hot bytes: %d */\n" % touched)
        out.write("SECTIONS {\n  .rodata.hot : {\n")
        for p in patterns:
            out.write("    %s\n" % p)
        out.write("  }\n} INSERT BEFORE .rodata;\n")
    sys.stderr.write("hot_data.py: %d sections, %d bytes\n" % (len(patterns), touched))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
