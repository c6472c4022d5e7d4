"""check-env: names the package pair behind a pip check finding, a broken import or a version the lock lacks, and
ignores only the requirements pruna, installed without its dependencies, declares on purpose."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from fluxperf import envcheck
from tests.unit.test_lock import linux_markers

# pip check's output format, with the conflict a second pip invocation made on 2026-12-06 (transformers 5.25.0 beside
# the huggingface_hub 1.33.0 pruna's requirements chose) and pruna's expected findings (shortened: it has ~20 more).
PIP_CHECK = """\
pruna 0.3.4 requires bitsandbytes, which is not installed.
pruna 0.3.4 requires openvino, which is not installed.
pruna 0.3.4 has requirement torchao<0.17.0,>=0.12.0, but you have torchao 0.18.0.
transformers 5.25.0 has requirement huggingface-hub<3.0,>=2.4.0, but you have huggingface-hub 1.33.0.
lpips 0.1.4 requires tqdm, which is not installed.
"""

LOCK = """\
# a header
numpy==2.2.6 ; python_full_version < '3.11' and platform_machine == 'x86_64' and sys_platform == 'linux'
numpy==2.4.6 ; python_full_version >= '3.11' and platform_machine == 'x86_64' and sys_platform == 'linux'
torch==2.14.1 ; platform_machine == 'x86_64' and sys_platform == 'linux'
huggingface-hub==1.33.0 ; platform_machine == 'x86_64' and sys_platform == 'linux'
"""


def test_pip_check_names_the_pair_and_ignores_only_prunas_own_requirements():
    assert envcheck.pip_check_problems(PIP_CHECK) == [
        "transformers 5.25.0 requires huggingface-hub<3.0,>=2.4.0 but huggingface-hub 1.33.0 is installed",
        "lpips 0.1.4 requires tqdm, which is not installed",
    ]
    assert envcheck.pip_check_problems("No broken requirements found.\n") == []


@pytest.fixture
def lock(tmp_path):
    path = tmp_path / "lock.txt"
    path.write_text(LOCK)
    return path


@pytest.mark.parametrize("python, numpy", [("3.10.13", "2.2.6"), ("3.12.1", "2.4.6")])
def test_an_environment_built_from_the_lock_passes(lock, python, numpy):
    installed = {
        "numpy": ("numpy", numpy),
        "torch": ("torch", "2.14.1"),
        "huggingface-hub": ("huggingface_hub", "1.33.0"),
        "fluxperf": ("fluxperf", "0.1.0"),
    }
    assert envcheck.lock_problems(lock, installed, linux_markers(python)) == []


@pytest.mark.parametrize(
    "extra, expected",
    [
        (("httpx2", "2.16.2"), "httpx2 2.16.2 is installed but {lock} doesn't pin httpx2"),
        (("torch", "2.99.0"), "torch 2.99.0 is installed but {lock} pins torch==2.14.1"),
        # The other Python's pin is not this one's.
        (("numpy", "2.2.6"), "numpy 2.2.6 is installed but {lock} pins numpy==2.4.6"),
    ],
    ids=["unlisted package", "other version", "other python's version"],
)
def test_a_version_the_lock_does_not_pin_is_named(lock, extra, expected):
    installed = {
        "numpy": ("numpy", "2.4.6"),
        "torch": ("torch", "2.14.1"),
        "huggingface-hub": ("huggingface_hub", "1.33.0"),
    }
    installed[extra[0]] = extra
    assert envcheck.lock_problems(lock, installed, linux_markers("3.11.7")) == [expected.format(lock=lock)]


def test_a_lock_for_another_platform_says_so_once(lock):
    mac = {
        **linux_markers("3.11.7"),
        "sys_platform": "darwin",
        "platform_machine": "arm64",
        "platform_system": "Darwin",
    }
    (problem,) = envcheck.lock_problems(lock, {"torch": ("torch", "2.14.1")}, mac)
    assert "pins nothing for this machine" in problem and "make venv LOCK=" in problem


def _broken_module(tmp_path, name, body):
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(body))
    return name


def test_a_failing_import_is_named_with_its_error(tmp_path, monkeypatch):
    # A stand-in for transformers 5.25 next to huggingface_hub 1.33, imported in the child process check-env starts.
    broken = _broken_module(
        tmp_path,
        "fluxperf_fake_transformers",
        """\
        raise ImportError("huggingface-hub>=2.4.0,<3.0 is required for a normal functioning of this module, "
                          "but found huggingface-hub==1.33.0.")
        """,
    )
    fine = _broken_module(tmp_path, "fluxperf_fake_fine", "VALUE = 1\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    problems = envcheck.import_problems(
        (("transformers", broken, ()), ("fine", fine, ("VALUE",)), ("fine", fine, ("Missing",)))
    )
    assert problems[0].startswith(f"import {broken} failed (transformers ")
    assert problems[0].endswith(
        "): ImportError: huggingface-hub>=2.4.0,<3.0 is required for a normal functioning "
        "of this module, but found huggingface-hub==1.33.0."
    )
    assert len(problems) == 2 and problems[1].startswith(f"from {fine} import Missing failed")


def test_a_lazy_import_error_keeps_the_line_with_the_cause(tmp_path, monkeypatch):
    # diffusers' lazy modules announce the error on one line and give it on the next.
    lazy = _broken_module(
        tmp_path,
        "fluxperf_fake_diffusers",
        """\
        raise RuntimeError("Failed to import diffusers.pipelines.flux.pipeline_flux because of the following error "
                           "(look up to see its traceback):\\nhuggingface-hub>=2.4.0,<3.0 is required for a normal "
                           "functioning of this module, but found huggingface-hub==1.33.0.\\nmore")
        """,
    )
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    (problem,) = envcheck.import_problems((("diffusers", lazy, ("FluxPipeline",)),))
    assert problem.endswith(
        "RuntimeError: Failed to import diffusers.pipelines.flux.pipeline_flux because of the "
        "following error (look up to see its traceback): huggingface-hub>=2.4.0,<3.0 is required "
        "for a normal functioning of this module, but found huggingface-hub==1.33.0."
    )


def test_an_import_that_kills_the_interpreter_is_named(tmp_path, monkeypatch):
    crash = _broken_module(tmp_path, "fluxperf_fake_crash", "import os\nos._exit(7)\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    (problem,) = envcheck.import_problems((("json", "json", ()), ("crashy", crash, ())))
    assert problem.startswith(f"import {crash} (crashy) crashed the interpreter (exit code 7)")


def test_check_env_fails_naming_every_problem(monkeypatch, capsys, tmp_path):
    lock = tmp_path / "lock.txt"
    lock.write_text("torch==2.14.1\n")  # no marker: the same on any machine that runs this test
    monkeypatch.setattr(envcheck, "run_pip_check", lambda: envcheck.pip_check_problems(PIP_CHECK))
    monkeypatch.setattr(envcheck, "installed_distributions", lambda: {"torch": ("torch", "2.99.0")})
    monkeypatch.setattr(envcheck, "import_problems", lambda: ["import transformers failed (transformers 5.25.0): ..."])
    # pruna installed, with a huggingface_hub its extra's range excludes.
    versions = {"pruna": "0.3.4", "huggingface_hub": "2.4.0"}
    monkeypatch.setattr(envcheck, "installed_version", versions.get)
    monkeypatch.setattr(
        envcheck, "fluxperf_requires", lambda: ["torch>=2.4", 'huggingface_hub<2,>=1.32; extra == "pruna-deps"']
    )
    assert envcheck.main(lock) == 1
    err = capsys.readouterr().err
    for expected in [
        "transformers 5.25.0 requires huggingface-hub<3.0,>=2.4.0 but huggingface-hub 1.33.0 is installed",
        "pruna 0.3.4 needs huggingface_hub<2,>=1.32 (fluxperf's pruna-deps extra) but huggingface_hub "
        "2.4.0 is installed",
        f"torch 2.99.0 is installed but {lock} pins torch==2.14.1",
        "import transformers failed",
    ]:
        assert f"  - {expected}" in err, err
    assert "bitsandbytes" not in err and "torchao" not in err


def test_check_env_passes_quietly_on_a_sound_environment(monkeypatch, capsys):
    monkeypatch.setattr(envcheck, "run_pip_check", lambda: [])
    monkeypatch.setattr(envcheck, "import_problems", lambda: [])
    monkeypatch.setattr(envcheck, "installed_version", {"pruna": None}.get)
    assert envcheck.main(None) == 0
    assert capsys.readouterr().out.startswith("check-env: OK")


def test_the_command_line_reaches_check_env(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "fluxperf", "check-env", "--lock", str(tmp_path / "missing.txt")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "missing.txt: no such file" in result.stderr
