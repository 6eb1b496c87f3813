"""The sandbox is strict enough to catch the bug that made real jobs fail: a template that shows
the frame through `task.input.taskObject` when no pre-annotation Lambda provides it."""

from __future__ import annotations

import pytest

from bot import recipe
from bot.sandbox import run_sandbox


@pytest.mark.slow
def test_the_old_template_makes_the_sandbox_job_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    # gtbot's template before this fix: the recipe's expression whatever the Lambdas.
    monkeypatch.setattr(
        recipe, "image_expression", lambda project: recipe.IMAGE_WITH_RECIPE_PRE_LAMBDA
    )
    printed: list[str] = []
    summary = run_sandbox(frames=3, workers=1, rate=50.0, keep=False, out=printed.append)
    text = "\n".join(printed)
    assert summary.status == "Failed" and summary.labels == 0
    assert "None of the 3 data objects could be labeled" in text
    assert "the task's image link rendered empty" in text
    assert "Counts: 0 labeled, 3 failed, 0 not labeled." in text
