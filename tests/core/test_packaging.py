"""`pip install .` in a clean virtual environment installs gridshift.scheduler and
gridshift.adapters (with the bundled trace and the licence file), and never the bare
top-level names `scheduler` or `adapters`."""

import subprocess
import sys
import venv

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow


def test_clean_install_has_the_namespaced_packages_only(tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(env_dir)
    py = env_dir / "bin" / "python"
    # Build with isolation (as a user would), dependencies included.
    result = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", str(REPO_ROOT)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    check = subprocess.run(
        [
            str(py),
            "-c",
            "import gridshift.scheduler, gridshift.adapters, gridshift.adapters.local;"
            "import importlib.util as u;"
            "assert u.find_spec('scheduler') is None, 'scheduler installed top-level';"
            "assert u.find_spec('adapters') is None, 'adapters installed top-level';"
            "from gridshift.scheduler.signals.replay import bundled_trace_path;"
            "assert bundled_trace_path().is_file();"
            "import importlib.metadata as m;"
            "files = [str(f) for f in m.distribution('gridshift').files or []];"
            "assert any(f.endswith('licenses/LICENSE') for f in files), 'no licence file'",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert check.returncode == 0, check.stderr
    version = subprocess.run(
        [str(env_dir / "bin" / "gridshift"), "--version"], capture_output=True, text=True
    )
    assert version.stdout.startswith("gridshift "), version.stderr
    assert sys.version_info >= (3, 11)
