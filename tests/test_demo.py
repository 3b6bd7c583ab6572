"""The seed's demo runs end to end in-process and prints the figures it promises."""

from __future__ import annotations

import re

import pytest

from app.demo import main


def test_demo_prints_method_metrics_and_decision(capsys: pytest.CaptureFixture[str]) -> None:
    assert main() == 0
    out = capsys.readouterr().out
    assert "72 feedback samples" in out
    assert re.search(r"method chosen: (platt|beta|isotonic|histogram)", out)
    ece = re.search(r"ECE\s+before (\d\.\d+)\s+after (\d\.\d+)", out)
    assert ece and float(ece.group(2)) < float(ece.group(1))
    assert re.search(r"Brier before \d\.\d+\s+after \d\.\d+", out)
    assert "gate: deployed" in out
