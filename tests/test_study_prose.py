"""The study's prose (docs/results-study.md, the README's seed-001 screen) quotes only estimates its generated
results blocks hold: when a refresh moves an interval, the sentence that cites the old one fails here."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STUDY_BLOCK = re.compile(r"<!-- results: configs/paper/(?:parts/)?full-[^>]*-->(.*?)<!-- /results -->", re.DOTALL)
ANY_BLOCK = re.compile(r"<!-- results: .*? -->.*?<!-- /results -->", re.DOTALL)
ESTIMATE = re.compile(r"[-+]?\d+\.\d+ \[[-+]?\d+\.\d+, [-+]?\d+\.\d+\]")  # "0.221 [0.060, 0.383]"


def _flat(text: str) -> str:
    return " ".join(text.split())  # a quote broken over two lines is still one quote


def _readme_study_screen(readme: str) -> str:
    start = readme.index("### MoE DQN (seed 001)")
    return readme[start:readme.index("\n### ", start + 1)]


def test_every_estimate_the_study_prose_quotes_is_in_a_generated_block():
    page = (ROOT / "docs" / "results-study.md").read_text()
    readme = (ROOT / "README.md").read_text()
    generated = _flat(" ".join(STUDY_BLOCK.findall(page) + STUDY_BLOCK.findall(readme)))
    assert "IQM" in generated
    for name, text in [("docs/results-study.md", page), ("README.md", _readme_study_screen(readme))]:
        quoted = ESTIMATE.findall(_flat(ANY_BLOCK.sub(" ", text)))
        assert quoted, f"{name}: the study's prose quotes no estimate (has its wording changed?)"
        missing = [q for q in quoted if q not in generated]
        assert not missing, f"{name} quotes estimates no study block holds (stale after a refresh?): {missing}"
