"""scripts/doc_outputs.py: the command outputs the docs quote are what their commands print, on the repository's
own data; a stale block fails with a diff, bad input exits 2 and leaves the page as it was."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "doc_outputs.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True)


PAGE = """# A page

Prose stays.

<!-- output: printf '| a | b |\\n|---|---|\\n| 1 | %s |\\n' "$S" -->
stale
<!-- /output -->

<!-- output text: echo plain; echo words -->
<!-- /output -->

More prose.
"""


def test_blocks_are_written_from_their_commands_and_a_changed_number_fails(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(PAGE)
    assert _run(str(page)).returncode == 1  # the body says "stale"
    written = _run("--write", str(page))
    assert written.returncode == 0, written.stderr
    study = f"study/{(ROOT / 'study' / 'COMMIT').read_text().strip()}"
    text = page.read_text()
    assert ("<!-- output: printf '| a | b |\\n|---|---|\\n| 1 | %s |\\n' \"$S\" -->\n```bash\n"
            f"printf '| a | b |\\n|---|---|\\n| 1 | %s |\\n' \"$S\"\n```\n\n| a | b |\n|---|---|\n| 1 | {study} |\n"
            "<!-- /output -->") in text
    assert "```bash\necho plain; echo words\n```\n\n```text\nplain\nwords\n```\n<!-- /output -->" in text
    assert text.startswith("# A page\n\nProse stays.\n") and text.endswith("\nMore prose.\n")
    checked = _run(str(page))
    assert checked.returncode == 0 and "2 output block(s) match their commands" in checked.stdout
    page.write_text(text.replace(f"| 1 | {study} |", f"| 2 | {study} |"))  # the output, not the command
    stale = _run(str(page))
    assert stale.returncode == 1 and f"-| 2 | {study} |" in stale.stdout and f"+| 1 | {study} |" in stale.stdout
    assert "no longer matches its command" in stale.stdout


@pytest.mark.parametrize("content,message", [
    ("<!-- output: echo a -->\nno end\n", "has no '<!-- /output -->' after it"),
    ("<!-- output: echo a -->\n<!-- /output -->\n<!-- output: exit 3 -->\n<!-- /output -->\n",
     "the command 'exit 3' exited 3"),
    ("no blocks here\n", "holds no '<!-- output: CMD -->' block"),
])
def test_bad_input_exits_2_with_one_line_and_leaves_the_page(tmp_path, content, message):
    page = tmp_path / "page.md"
    page.write_text(content)
    done = _run("--write", str(page))
    assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert page.read_text() == content


def test_a_missing_page_exits_2(tmp_path):
    done = _run(str(tmp_path / "nowhere.md"))
    assert done.returncode == 2 and "nowhere.md' is not a file" in done.stderr


def test_the_docs_quote_what_their_commands_print_on_the_kept_runs():
    """The study's cost, memory and progress blocks (docs/results-study.md) from the runs kept in study/."""
    pages = [p for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
             if re.search(r"^<!-- output", p.read_text(), re.MULTILINE)]
    assert ROOT / "docs" / "results-study.md" in pages
    done = _run(*map(str, pages))
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr
