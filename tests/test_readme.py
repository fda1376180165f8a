"""The README stays true to the code: every setting is documented, the commands it gives exist."""

import re
from pathlib import Path

from service.config import Settings

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_every_setting_is_in_the_settings_table():
    documented = set(re.findall(r"^\| `(TINYSERVE_[A-Z_]+)` \|", README, flags=re.M))
    assert documented == {f"TINYSERVE_{name.upper()}" for name in Settings.model_fields}


def test_ci_runs_exactly_the_readme_test_command():
    assert "bash .ci/bootstrap test " in README and "bash .ci/bootstrap serve " in README
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^exec bash \.ci/bootstrap test$", ci, flags=re.M)
