#!/usr/bin/env python3
"""The documentation check (CI step "docs"), standard library only.

1. Every relative link in README.md, README.zh-CN.md, RELIABILITY.md, BENCHMARKS.md and docs/*.md
   names a file or directory of the repository, and every #anchor a heading of its page (GitHub's
   slugs, Chinese headings included) or an HTML id/name there. External http(s) and mailto links
   are not fetched (CI has no internet): they are listed as skipped. A link that leaves the
   repository is a problem: the docs cite public pages or files in the repository only.
2. A shell block claims to run when the line before its fence is exactly `<!-- ci: runs -->`.
   Each such block runs with `bash -euo pipefail` from the repository root, with target/debug
   first in PATH (CI's test step has built target/debug/ecs-renewd by then), stdin closed, in a
   process group of its own that is killed after the time limit (--timeout, default 60 s). A
   failure names the file and line of the block and shows the end of its output.
3. README.zh-CN.md is in step with README.md: the same heading levels in the same order, the same
   fenced code blocks (identical text, the same run markers, the same order), and each links to
   the other.

Prints every problem, then a one-line summary; exits 1 when there is any problem.
Usage: python3 .ci/check-docs.py [--no-run] [--timeout SECONDS]
"""

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import unicodedata
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parent.parent
RUN_MARKER = "<!-- ci: runs -->"
SHELLS = {"sh", "bash", "shell"}
PAIR = ("README.md", "README.zh-CN.md")


def doc_files():
    files = [ROOT / name for name in ("README.md", "README.zh-CN.md", "RELIABILITY.md", "BENCHMARKS.md")]
    files += sorted((ROOT / "docs").glob("*.md"))
    return files


def rel(path):
    return path.relative_to(ROOT).as_posix()


FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
HTML_ID = re.compile(r"<[a-zA-Z][^>]*?\s(?:id|name)\s*=\s*[\"']([^\"']+)[\"']")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
INLINE_LINK = re.compile(r"!?\[((?:[^\[\]]|\[[^\]]*\])*)\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
REF_DEF = re.compile(r"^ {0,3}\[([^\]]+)\]:\s*(<[^>]*>|\S+)")
AUTOLINK = re.compile(r"<((?:https?|mailto):[^>\s]+)>")
HREF = re.compile(r"<a\s[^>]*?href\s*=\s*[\"']([^\"']+)[\"']", re.IGNORECASE)
HTML_COMMENT = re.compile(r"<!--.*?-->")


class Page:
    """A Markdown file read once: headings (with GitHub anchors), fenced blocks, prose lines."""

    def __init__(self, path):
        self.path = path
        self.lines = path.read_text(encoding="utf-8").split("\n")
        self.headings = []  # (line number, level, text)
        self.blocks = []  # (line number of the opening fence, info, text, marked to run)
        self.prose = []  # (line number, text) outside fenced blocks
        self.problems = []
        fence = None
        for number, line in enumerate(self.lines, 1):
            m = FENCE.match(line)
            if fence is None and m and not (m.group(1)[0] == "`" and "`" in m.group(2)):
                previous = self.lines[number - 2].strip() if number > 1 else ""
                fence = (m.group(1), m.group(2).strip(), number, [], previous == RUN_MARKER)
                continue
            if fence is not None:
                if m and m.group(1)[0] == fence[0][0] and len(m.group(1)) >= len(fence[0]) and not m.group(2).strip():
                    self.blocks.append((fence[2], fence[1], "\n".join(fence[3]), fence[4]))
                    fence = None
                else:
                    fence[3].append(line)
                continue
            self.prose.append((number, line))
            if line.strip() == RUN_MARKER:
                following = self.lines[number] if number < len(self.lines) else ""
                m2 = FENCE.match(following)
                if not m2 or m2.group(2).strip().split(" ")[0] not in SHELLS:
                    self.problems.append(f"{rel(path)}:{number}: {RUN_MARKER} must be followed by a ```sh fence")
            h = HEADING.match(line)
            if h:
                self.headings.append((number, len(h.group(1)), (h.group(2) or "").strip()))
        if fence is not None:
            self.problems.append(f"{rel(path)}:{fence[2]}: code fence never closed")
        self.anchors = set()
        seen = {}
        for _, _, text in self.headings:
            base = slug(text)
            n = seen.get(base, 0)
            seen[base] = n + 1
            self.anchors.add(base if n == 0 else f"{base}-{n}")
        for _, line in self.prose:
            self.anchors.update(HTML_ID.findall(line))


def slug(text):
    """GitHub's heading anchor: the rendered text in lower case; letters, digits, marks, `_`, `-`
    and spaces kept (any script, so Chinese headings keep their characters), everything else
    dropped, each space a `-`."""
    text = CODE_SPAN.sub(lambda m: m.group(2), text)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # links and images: their text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = re.sub(r"(\*+|(?<!\w)_+|_+(?!\w))", "", text)  # emphasis markers
    kept = (c for c in text.strip().lower() if c in " -_" or unicodedata.category(c)[0] in "LNM")
    return "".join(kept).replace(" ", "-")


def links(page):
    """(line number, target) of every link in the page's prose (code spans and blocks excluded)."""
    for number, line in page.prose:
        line = HTML_COMMENT.sub("", line)
        without_code = CODE_SPAN.sub(lambda m: " " * len(m.group(0)), line)
        for m in INLINE_LINK.finditer(without_code):
            yield number, m.group(2).strip("<>")
        m = REF_DEF.match(without_code)
        if m:
            yield number, m.group(2).strip("<>")
        for m in AUTOLINK.finditer(without_code):
            yield number, m.group(1)
        for m in HREF.finditer(without_code):
            yield number, m.group(1)


def check_links(pages, problems, skipped):
    cache = {page.path: page for page in pages}
    checked = 0
    for page in pages:
        where = rel(page.path)
        for number, target in links(page):
            checked += 1
            if re.match(r"^(https?|mailto):", target, re.IGNORECASE):
                skipped.append(f"{where}:{number}: {target}")
                continue
            if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target):
                problems.append(f"{where}:{number}: link {target!r}: only relative links and http(s) are allowed")
                continue
            path_part, _, anchor = target.partition("#")
            path_part, anchor = unquote(path_part.split("?")[0]), unquote(anchor)
            if path_part:
                base = ROOT if path_part.startswith("/") else page.path.parent
                resolved = (base / path_part.lstrip("/")).resolve()
                if resolved != ROOT and ROOT not in resolved.parents:
                    problems.append(f"{where}:{number}: link {target!r} leaves the repository")
                    continue
                if not resolved.exists():
                    problems.append(f"{where}:{number}: link {target!r}: {rel(resolved)} does not exist")
                    continue
            else:
                resolved = page.path
            if not anchor:
                continue
            if resolved.is_file() and resolved.suffix == ".md":
                if resolved not in cache:
                    cache[resolved] = Page(resolved)
                if anchor not in cache[resolved].anchors:
                    problems.append(f"{where}:{number}: link {target!r}: {rel(resolved)} has no heading with the anchor #{anchor}")
            elif not (resolved.is_file() and re.fullmatch(r"L\d+(-L\d+)?", anchor)):
                problems.append(f"{where}:{number}: link {target!r}: #{anchor} can only be checked in a Markdown file (or be #L<line>)")
    return checked


def run_blocks(pages, problems, timeout):
    env = dict(os.environ)
    env["PATH"] = f"{ROOT / 'target' / 'debug'}{os.pathsep}{env.get('PATH', '')}"
    ran = 0
    binary = ROOT / "target" / "debug" / "ecs-renewd"
    for page in pages:
        for number, info, text, marked in page.blocks:
            if not marked:
                continue
            ran += 1
            where = f"{rel(page.path)}:{number}"
            # Output to a file, not a pipe: a process the block leaves in the background must not
            # keep the check waiting for the pipe to close.
            with tempfile.TemporaryFile() as out:
                proc = subprocess.Popen(
                    ["bash", "-euo", "pipefail", "-c", text], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
                try:
                    status = proc.wait(timeout=timeout)
                    failure = f"exit status {status}" if status else None
                except subprocess.TimeoutExpired:
                    failure = f"no end after {timeout:g} s (killed)"
                try:  # the block's process group, and whatever it left running in the background
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
                out.seek(0)
                output = out.read()
            if failure:
                tail = output.decode("utf-8", "replace").rstrip().split("\n")[-20:]
                hint = "" if binary.exists() else f" ({rel(binary)} is missing: build it first)"
                problems.append(f"{where}: the block marked {RUN_MARKER} failed: {failure}{hint}\n"
                                + "\n".join("      | " + line for line in tail))
    return ran


def check_pair(pages, problems):
    by_name = {rel(page.path): page for page in pages}
    en, zh = (by_name[name] for name in PAIR)
    levels = [[level for _, level, _ in page.headings] for page in (en, zh)]
    if levels[0] != levels[1]:
        for i in range(max(map(len, levels))):
            a = en.headings[i] if i < len(en.headings) else None
            b = zh.headings[i] if i < len(zh.headings) else None
            if a is None or b is None or a[1] != b[1]:
                show = lambda page, h: f"{rel(page.path)}:{h[0]} level {h[1]} {h[2]!r}" if h else f"{rel(page.path)}: no heading"
                problems.append(f"{PAIR[1]} is out of step with {PAIR[0]}: heading {i + 1} is {show(en, a)} but {show(zh, b)}"
                                f" (each has {len(en.headings)} and {len(zh.headings)} headings)")
                break
    blocks = [page.blocks for page in (en, zh)]
    for i in range(max(map(len, blocks))):
        a = blocks[0][i] if i < len(blocks[0]) else None
        b = blocks[1][i] if i < len(blocks[1]) else None
        if a is None or b is None or a[1:] != b[1:]:
            show = lambda page, blk: f"{rel(page.path)}:{blk[0]}" if blk else f"{rel(page.path)}: no block"
            problems.append(f"{PAIR[1]} is out of step with {PAIR[0]}: code block {i + 1} differs ({show(en, a)} vs {show(zh, b)};"
                            " code blocks and their run markers must be identical)")
    for page, other in ((en, PAIR[1]), (zh, PAIR[0])):
        targets = {target.partition("#")[0] for _, target in links(page)}
        if other not in targets and f"./{other}" not in targets:
            problems.append(f"{rel(page.path)} does not link to {other}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-run", action="store_true", help="check links and the translation only")
    parser.add_argument("--timeout", type=float, default=60, help="seconds each marked block may take")
    args = parser.parse_args()

    pages = [Page(path) for path in doc_files() if path.exists()]
    problems = [f"{name} is missing" for name in map(rel, doc_files()) if not (ROOT / name).exists()]
    for page in pages:
        problems += page.problems
    skipped = []
    checked = check_links(pages, problems, skipped)
    if all((ROOT / name).exists() for name in PAIR):
        check_pair(pages, problems)
    ran = 0 if args.no_run else run_blocks(pages, problems, args.timeout)
    marked = sum(block[3] for page in pages for block in page.blocks)

    for line in skipped:
        print(f"skipped (external, not fetched): {line}")
    for problem in problems:
        print(f"PROBLEM {problem}")
    runs = f"{ran} marked block(s) run" if not args.no_run else f"{marked} marked block(s) not run (--no-run)"
    print(f"check-docs: {len(pages)} files, {checked} links checked ({len(skipped)} external skipped), {runs}, "
          f"{PAIR[1]} {'out of step' if any('out of step' in p for p in problems) else 'in step'}: "
          + (f"{len(problems)} problem(s)" if problems else "ok"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
