"""Keep the command outputs quoted in the docs equal to what their commands print: write them, or check them.

An output block in a Markdown file names its command in its opening comment; the body is generated::

    <!-- output: python scripts/study_cost.py $S/paper-full-cartpole -->
    ```bash
    python scripts/study_cost.py $S/paper-full-cartpole
    ```

    ... what the command printed (Markdown: tables and lines as they are) ...
    <!-- /output -->

``<!-- output text: CMD -->`` fences what the command printed as plain text instead (for output that is not
Markdown). The command runs in bash from the repository root with ``S`` set to the study's kept runs
(``study/<study/COMMIT>``), as the docs' own code blocks set it, so a block over committed data (the study's
cost and memory tables, its progress counts) is a function of the repository alone and CI checks it.

    python scripts/doc_outputs.py docs/results-study.md           # check: exit 1 with a diff when stale
    python scripts/doc_outputs.py --write docs/results-study.md   # rewrite every block of the page

Exit status 2, with one line, on bad input (no such page, a block without its end, a command that fails);
the page is then left as it was. Why a script: cog and similar tools put code into the page; this keeps the
page to a command a reader can paste, and the results blocks of ``scripts/check_results.py`` are of another
kind (they rerun sweeps and compare statistically across CPUs).
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^<!-- output(?P<text> text)?: (?P<cmd>.+?) -->\n(?P<body>.*?)^<!-- /output -->$",
                   re.MULTILINE | re.DOTALL)
OPEN = re.compile(r"^<!-- output( text)?: ", re.MULTILINE)


class BadInput(Exception):
    """A page or command the script cannot use; said in one line, exit 2."""


def run(cmd: str) -> str:
    """What ``cmd`` prints on stdout, run in bash from the repository root with ``S`` set as the docs set it."""
    env = dict(os.environ)
    commit = ROOT / "study" / "COMMIT"
    if commit.is_file():
        env["S"] = f"study/{commit.read_text().strip()}"
    done = subprocess.run(["bash", "-c", f"set -o pipefail; {cmd}"], cwd=ROOT, env=env, capture_output=True,
                          text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise BadInput(f"the command '{cmd}' exited {done.returncode}: {last}")
    return done.stdout.rstrip("\n")


def body(cmd: str, text: bool) -> str:
    """A block's generated body: the command, then what it printed."""
    out = run(cmd)
    printed = f"```text\n{out}\n```" if text else out
    return f"```bash\n{cmd}\n```\n\n{printed}\n"


def blocks(page: str) -> dict[str, str]:
    """Every output block of ``page`` as it should read, keyed by its opening comment."""
    found = list(BLOCK.finditer(page))
    if len(found) != len(OPEN.findall(page)):
        raise BadInput("an '<!-- output: CMD -->' comment has no '<!-- /output -->' after it")
    return {(opening := m.group(0).splitlines()[0]): f"{opening}\n{body(m['cmd'], bool(m['text']))}<!-- /output -->"
            for m in found}


def put(page: str, new: dict[str, str]) -> str:
    """``page`` with its blocks replaced by ``new``'s (by opening comment); others as they are."""
    return BLOCK.sub(lambda m: new.get(m.group(0).splitlines()[0], m.group(0)), page)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pages", nargs="+", help="Markdown files holding output blocks")
    parser.add_argument("--write", action="store_true", help="rewrite the blocks instead of checking them")
    args = parser.parse_args(argv)
    stale = 0
    try:
        pages = {}
        for name in args.pages:
            path = Path(name)
            if not path.is_file():
                raise BadInput(f"'{name}' is not a file")
            generated = blocks(path.read_text())
            if not generated:
                raise BadInput(f"'{name}' holds no '<!-- output: CMD -->' block")
            pages[path] = generated
    except BadInput as e:
        print(f"doc_outputs: {e}", file=sys.stderr)
        return 2
    for path, generated in pages.items():  # written only once every command of every page has run
        old = path.read_text()  # as it is now: prose edited while the commands ran is kept
        new, count = put(old, generated), len(generated)
        if old == new:
            print(f"{path}: {count} output block(s) match their commands")
        elif args.write:
            tmp = path.with_name(f".{path.name}.tmp")  # replaced whole: never a half-written page
            tmp.write_text(new)
            tmp.replace(path)
            print(f"{path}: {count} output block(s) written")
        else:
            stale += 1
            sys.stdout.writelines(difflib.unified_diff(old.splitlines(True), new.splitlines(True), f"{path}",
                                                       f"{path} (as the commands print it now)"))
            print(f"{path}: an output block no longer matches its command; rewrite with --write")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
