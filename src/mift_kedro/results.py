"""Results as data: keep a finished run's results in the repository, and write the README's
result tables from them.

``export`` copies one run's reporting outputs — the metrics CSV, each evaluation set's table
and plot (tables A/B/C by default) and confusion matrix (classification sets), the standard
benchmarks (metrics, table, plot), the forgetting
curve, the spread over training seeds, the plots, each model's training record, the run's
parameters and its per-pipeline timings — byte for byte from the versioned catalog into ``docs/results/<name>/``, with a
``manifest.json`` naming each file's dataset, version and SHA-256. ``render-readme`` replaces
every block of the README and of the pages in ``docs/`` between

    <!-- results:<name>:<table>:start -->  and  <!-- results:<name>:<table>:end -->

with the table generated from ``docs/results/<name>/``; ``--check`` only compares, and fails
when a block and the files disagree (the test suite runs it). Tables: ``table_<table>`` (e.g.
``table_A``), ``confusion_<eval set>``, ``table_benchmarks``, ``forgetting_curve``, ``seed_summary`` (the run's own Markdown files), ``timings``
(``pipeline_timings.json``), ``benchmark_cost`` (the benchmark nodes' seconds and CI widths)
and ``training`` (the training records); ``results:bench:<name>`` blocks render the record a
speed benchmark wrote to ``docs/results/bench/<name>.json``.

    python -m mift_kedro.results export [latest|<version>|<a run's version folder>] docs/results/demo
    python -m mift_kedro.results render-readme [--check]
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mift_kedro import config, runs

#: Catalog dataset -> file name under docs/results/<name>/. `metrics` is required. Each
#: evaluation set's table, plot and confusion matrix are added from the run's parameters
#: (:func:`eval_set_exports`).
EXPORTS = {
    "metrics": "metrics.csv",
    "forgetting_curve": "forgetting_curve.csv",
    "forgetting_curve_md": "forgetting_curve.md",
    "seed_summary": "seed_summary.csv",
    "seed_summary_md": "seed_summary.md",
    "benchmark_metrics": "benchmark_metrics.csv",
    "table_benchmarks_csv": "table_benchmarks.csv",
    "table_benchmarks_md": "table_benchmarks.md",
    **{f"plot_{s}": f"plot_{s}.png" for s in ("benchmarks", "forgetting_curve")},
    "run_parameters": "run_parameters.json",
    "pipeline_timings": "pipeline_timings.json",
}
REQUIRED = ("metrics",)
MANIFEST = "manifest.json"
MARKER = re.compile(
    r"(<!-- results:(?P<name>[\w.-]+):(?P<table>\w+):start -->\n)(?P<body>.*?)(<!-- results:(?P=name):(?P=table):end -->)",
    re.DOTALL,
)


class ResultsError(Exception):
    """A run or a results folder that cannot be exported or rendered; the message says why."""


# --- export -------------------------------------------------------------------------------


def project_catalog(project: Path, env: str | None = None) -> Any:
    """The project's data catalog (configuration only: no session, no hooks, nothing loaded)."""
    from kedro.config import OmegaConfigLoader
    from kedro.io import DataCatalog

    loader = OmegaConfigLoader(str(project / "conf"), base_env="base", default_run_env="local", env=env)
    return DataCatalog.from_config(loader["catalog"])


def resolve_version(catalog: Any, project: Path, run: str) -> str:
    """``latest`` (the newest ``metrics``), a version string, or a run's version folder."""
    available = runs.versions(catalog, "metrics", project)
    if not available:
        raise ResultsError(f"no run in {project}: no versions of metrics ({runs.dataset_file(catalog, 'metrics', '_', project).parent.parent})")
    if run == "latest":
        return available[-1]
    version = Path(run).name
    if version not in available:
        raise ResultsError(f"metrics has no version {version!r}; the runs are: {', '.join(available)}")
    return version


def export(project: Path, run: str, dest: Path, env: str | None = None) -> dict[str, Any]:
    """Copy the run's results into ``dest`` (replacing what was there) and write the manifest.

    A dataset missing at the run's version (e.g. training ran in an earlier ``kedro run``) is
    taken from its newest version not after the run's, and the manifest records which."""
    project = project.resolve()
    catalog = project_catalog(project, env)
    version = resolve_version(catalog, project, run)
    exports = dict(EXPORTS)
    found = _file_at_or_before(catalog, "run_parameters", version, project)
    parameters = _load_json(found[0]) if found else None
    exports.update(eval_set_exports(parameters or {}))
    if parameters:  # one training record per model: per variant and training seed
        seeds = config.training_seeds(parameters)
        for model in config.trained_models(parameters.get("variants") or {}, seeds):
            exports[f"{model.name}.training_metrics"] = f"training_metrics/{model.name}.json"
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    files, missing = {}, []
    for name, filename in exports.items():
        found = _file_at_or_before(catalog, name, version, project)
        if found is None:
            if name in REQUIRED:
                raise ResultsError(f"{name} of run {version} not found")
            missing.append(name)
            continue
        source, source_version = found
        target = dest / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        files[filename] = {"dataset": name, "version": source_version, "sha256": _sha256(target)}
    manifest = {
        "name": dest.name,
        "version": version,
        "env": (_load_json(dest / "pipeline_timings.json") or {}).get("env") or "local",
        "command": f"python -m mift_kedro.results export {version} {dest.as_posix()}",
        "files": files,
        "missing": missing,
    }
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def eval_set_exports(parameters: dict[str, Any]) -> dict[str, str]:
    """Each evaluation set's table (``table_<table>``) and plot, and a classification set's
    confusion matrix and its plot; the default sets when the run kept no parameters."""
    # without them: the default sets, whose tables are A, B and C
    eval_sets = parameters.get("eval_sets") or {
        name: {"table": table} for name, table in zip(config.EVAL_SETS, "ABC", strict=True)
    }
    exports = {}
    for eval_set, table, classification in config.eval_set_outputs(eval_sets, parameters.get("sources")):
        exports.update({f"table_{table}_{kind}": f"table_{table}.{kind}" for kind in ("csv", "md")})
        exports[f"plot_{eval_set}"] = f"plot_{eval_set}.png"
        if classification:
            exports.update({f"confusion_{eval_set}_{kind}": f"confusion_{eval_set}.{kind}" for kind in ("csv", "md")})
            exports[f"plot_confusion_{eval_set}"] = f"plot_confusion_{eval_set}.png"
    return exports


def _file_at_or_before(catalog: Any, name: str, version: str, project: Path) -> tuple[Path, str] | None:
    candidates = [v for v in runs.versions(catalog, name, project) if v <= version]
    if not candidates:
        return None
    chosen = version if version in candidates else candidates[-1]
    return runs.dataset_file(catalog, name, chosen, project), chosen


def verify(folder: Path) -> list[str]:
    """Files of an exported folder whose content no longer matches its manifest."""
    manifest = json.loads((folder / MANIFEST).read_text())
    return [name for name, meta in manifest["files"].items() if _sha256(folder / name) != meta["sha256"]]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _load_json(path: Path | None) -> Any:
    return json.loads(path.read_text()) if path is not None and path.is_file() else None


# --- README blocks ------------------------------------------------------------------------


def _markdown_file(filename: str) -> Callable[[Path], str]:
    def render(folder: Path) -> str:
        text = (folder / filename).read_text().strip("\n")
        # the run's file opens with its own `## Title`: a bold line inside the README's section
        return re.sub(r"\A#+ (.*)$", r"**\1**", text, count=1, flags=re.MULTILINE)

    return render


def _timings(folder: Path) -> str:
    record = json.loads((folder / "pipeline_timings.json").read_text())
    lines = ["| pipeline | seconds |", "|---|---:|"]
    lines += [f"| {name} | {seconds:.0f} |" for name, seconds in record["seconds"].items()]
    lines.append(f"| all nodes | {record['total_node_s']:.0f} |")
    lines.append(f"| pipeline wall time | {record['pipeline_wall_s']:.0f} |")
    started = record.get("started_at") or "?"
    return "\n".join(lines) + f"\n\n_Run started {started} (env `{record.get('env') or 'local'}`) on {_machine(record)}._"


def _machine(record: dict[str, Any]) -> str:
    """Platform, CPU model (records that name it), cores and GPUs of a timing record."""
    host = record.get("host", {})
    parts = (host.get("platform") or "?", host.get("cpu"), f"{host.get('cpu_count') or '?'} CPUs", *(host.get("gpus") or []))
    return ", ".join(str(x) for x in parts if x)


def _training(folder: Path) -> str:
    lines = ["| variant | steps | tokens seen | tokens/s | wall time (s) | loss first → last step |", "|---|---:|---:|---:|---:|---|"]
    for path in sorted((folder / "training_metrics").glob("*.json")):
        r = json.loads(path.read_text())
        loss = " → ".join("n/a" if v is None else f"{v:.3f}" for v in (r.get("loss_start"), r.get("loss_end")))
        lines.append(
            f"| {r['variant']} | {r['steps']} | {r['tokens_seen']} | {r['tokens_per_s']} | {r['wall_time_s']} | {loss} |"
        )
    return "\n".join(lines)


def _benchmark_cost(folder: Path) -> str:
    """Seconds of each model's benchmark node (model load included), per 100 questions, and
    the 95% CI width of its accuracy: what a benchmark size costs and buys."""
    import csv

    timings = json.loads((folder / "pipeline_timings.json").read_text())
    metrics = list(csv.DictReader((folder / "benchmark_metrics.csv").open()))
    lines = ["| model | task | questions | node seconds | seconds per 100 questions | acc [95% CI] | CI width |",
             "|---|---|---:|---:|---:|---|---:|"]
    for row in metrics:
        if row["metric"] != "acc":
            continue
        seconds = timings["node_seconds"].get(f"{row['model']}.score_benchmarks")
        n, low, high = int(row["n"]), float(row["ci_low"]), float(row["ci_high"])
        per_100 = "n/a" if seconds is None else f"{100 * seconds / n:.0f}"
        lines.append(
            f"| {row['display_name']} | {row['eval_set']} | {n} | {'n/a' if seconds is None else f'{seconds:.0f}'} "
            f"| {per_100} | {float(row['value']):.3f} [{low:.3f}, {high:.3f}] | {high - low:.3f} |"
        )
    started = timings.get("started_at") or "?"
    return "\n".join(lines) + (
        f"\n\n_Run started {started} (env `{timings.get('env') or 'local'}`) on "
        f"{_machine(timings)}; node seconds include loading the model "
        f"(and lm-eval's task index); the whole run took {timings['pipeline_wall_s']:.0f} s._"
    )


TABLES: dict[str, tuple[str, Callable[[Path], str]]] = {
    "forgetting_curve": ("forgetting_curve.md", _markdown_file("forgetting_curve.md")),
    "seed_summary": ("seed_summary.md", _markdown_file("seed_summary.md")),
    "table_benchmarks": ("table_benchmarks.md", _markdown_file("table_benchmarks.md")),
    "benchmark_cost": ("pipeline_timings.json", _benchmark_cost),
    "timings": ("pipeline_timings.json", _timings),
    "training": ("training_metrics/", _training),
}


def _fmt(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


def render_bench(record: dict[str, Any]) -> str:
    """A benchmark record (``benchmarks/common.py``) as a Markdown table with its provenance."""
    unit = record["unit"]
    lines = [
        f"| case | configuration | {unit}: min / median / max | project speed-up: min / median / max |",
        "|---|---|---|---|",
    ]
    for case in record["cases"]:
        for r in case["rows"]:
            rates = " / ".join(_fmt(r[k]) for k in ("min", "median", "max"))
            up = r.get("project_speedup")
            speedup = " / ".join(f"{up[k]:.2f}x" for k in ("min", "median", "max")) if up else "(project)"
            lines.append(f"| {case['case']} | {r['config']} | {rates} | {speedup} |")
    checks = "; ".join(f"{c['case']}: {c['checks']}" for c in record["cases"] if c.get("checks"))
    foot = [
        f"_Measured {record['date']} on {record['machine']}: `{record['command']}`, "
        f"{record['repeats']} interleaved repeats._",
    ]
    if checks:
        foot.append(f"_Checks: {checks}._")
    foot += [f"_{note}_" for note in record.get("notes", [])]
    return "\n".join(lines) + "\n\n" + "\n\n".join(foot)


#: Rows of the GPU memory record (``benchmarks/size_llama2.py``), in its order.
MEMORY_LABELS = {
    "nf4_weights": "NF4 base weights, with double-quantization constants",
    "fp32_embeddings_head_norms": "Embeddings, LM head and norms (fp32 after prepare_model_for_kbit_training)",
    "lora_weights": "LoRA weights ({lora})",
    "lora_gradients": "LoRA gradients ({lora})",
    "adamw_states": "AdamW states (2 x {lora})",
    "activations_checkpointed_layer_inputs": "Activations: checkpointed layer inputs (fp32)",
    "activations_recomputed_layer": "Activations: the layer recomputed in backward",
    "activations_lm_head": "Activations: LM head (bound: every token a response token)",
    "backward_buffers": "Backward buffers, largest dequantized weight",
}


GIB = 2**30


def _gib(value: int) -> str:
    return f"{value / GIB:.2f}"


def render_memory(result: dict[str, Any]) -> str:
    """The record of ``benchmarks/size_llama2.py`` (GPU memory per process, computed) as a table."""
    s, p = result["settings"], result["parameters"]
    lora = s["lora"]
    targets = lora["target_modules"]
    where = f"{len(targets)} projections" if isinstance(targets, list) else f"every linear layer but the LM head ({targets})"
    dtype = {"bfloat16": "bf16", "float32": "fp32"}.get(result.get("lora_dtype", "float32"), result.get("lora_dtype"))
    rows = [f"| {MEMORY_LABELS[k].format(lora=dtype)} | {_gib(v)} |" for k, v in result["memory_bytes"].items()]
    ddp = result["total_bytes_per_process_ddp"]
    card = next((gb for gb in (16, 24, 40, 48, 80) if gb * 10**9 >= ddp + GIB), None)
    return "\n".join([
        f"**Computed, not measured** (`{result['command']}`, figures from "
        "`docs/results/bench/size_llama2.json`): Llama-2-7B's shapes on the meta device with the "
        f"`conf/llama2` settings — 4-bit NF4, LoRA r={lora['r']} on {where}: "
        f"**{p['trainable_lora']:,} trainable parameters** on a base of "
        f"{p['total_with_lora'] - p['trainable_lora']:,} — per process, "
        f"micro-batch {s['batch_size']} x {s['max_length']} tokens, gradient checkpointing:",
        "",
        "| per process | GiB |",
        "|---|---:|",
        *rows,
        f"| **Total, one process** | **{_gib(result['total_bytes_one_process'])}** |",
        f"| DDP gradient buckets (several processes) | {_gib(result['ddp_gradient_buckets_bytes'])} |",
        f"| **Total per process under DDP** | **{_gib(ddp)}** |",
        "",
        "Not counted: the CUDA context and the allocator's reserve (often 1 GiB or more)"
        + (f"; with that, a {card} GB GPU per process holds it." if card else ".")
        + " The assumptions behind each line are printed by the script and kept in the JSON. "
        + "Optimizer steps per variant: "
        + ", ".join(
            f"{name} {-(-budget // s['effective_batch_size']):,} ({budget:,} examples / "
            f"{s['effective_batch_size']})" for name, budget in s["budgets"].items()
        )
        + " (fewer where examples longer than max_length are dropped).",
    ])


def render_block(results: Path, name: str, table: str) -> str:
    """The generated body of one README block (without its markers); ``bench`` blocks render
    ``docs/results/bench/<table>.json``, a benchmark's record."""
    if name == "bench":
        source = results / "bench" / f"{table}.json"
        if not source.is_file():
            raise ResultsError(f"README refers to benchmark {table!r}, but {source} does not exist: run the benchmark first")
        note = (
            f"<!-- generated by `python -m mift_kedro.results render-readme` from {source.as_posix()}; "
            "rerun the benchmark, do not edit this block -->"
        )
        record = json.loads(source.read_text())
        render = render_memory if "memory_bytes" in record else render_bench
        return f"{note}\n{render(record).strip()}\n"
    # any evaluation set's table or confusion matrix renders from its own Markdown file
    known = TABLES.get(table) or (
        (f"{table}.md", _markdown_file(f"{table}.md")) if re.fullmatch(r"(table|confusion)_\w+", table) else None
    )
    if known is None:
        raise ResultsError(
            f"unknown results table {table!r} in a README marker; known: {', '.join(TABLES)}, "
            "table_<table> and confusion_<eval set>"
        )
    folder = results / name
    if not (folder / MANIFEST).is_file():
        raise ResultsError(f"README refers to results {name!r}, but {folder / MANIFEST} does not exist: export the run first")
    source, render = known
    if not (folder / source).exists():
        raise ResultsError(f"README refers to {folder / source}, which the export of {name!r} does not hold")
    note = (
        f"<!-- generated by `python -m mift_kedro.results render-readme` from "
        f"{(folder / source).as_posix()}; edit the data, not this block -->"
    )
    return f"{note}\n{render(folder).strip()}\n"


def render_readme(text: str, results: Path) -> str:
    """``text`` with every results block regenerated from the files under ``results``."""
    return MARKER.sub(
        lambda m: m.group(1) + render_block(results, m.group("name"), m.group("table")) + m.group(5), text
    )


def readme_blocks(text: str) -> list[tuple[str, str]]:
    """The (name, table) of every results block in ``text``."""
    return [(m.group("name"), m.group("table")) for m in MARKER.finditer(text)]


# --- command line -------------------------------------------------------------------------


def documents(root: Path = Path(".")) -> list[Path]:
    """The Markdown pages whose results blocks ``render-readme`` keeps: the README and the
    pages of ``docs/``."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mift_kedro.results", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    ex = commands.add_parser("export", help="copy a finished run's results into docs/results/<name>")
    ex.add_argument("run", nargs="?", default="latest", help="latest (default), a version, or a run's version folder")
    ex.add_argument("dest", type=Path, help="e.g. docs/results/demo")
    ex.add_argument("--project", type=Path, default=Path("."), help="the project that ran (default: .)")
    ex.add_argument("--env", default=None, help="the configuration environment the run used")
    rd = commands.add_parser("render-readme", help="regenerate the results blocks of README.md and docs/*.md")
    rd.add_argument("--readme", type=Path, action="append", dest="pages",
                    help="a Markdown page to render (repeatable; default: README.md and docs/*.md)")
    rd.add_argument("--results", type=Path, default=Path("docs/results"))
    rd.add_argument("--check", action="store_true", help="only compare; exit 1 when a block is out of date")
    args = parser.parse_args(argv)
    try:
        if args.command == "export":
            manifest = export(args.project, args.run, args.dest, args.env)
            print(f"exported run {manifest['version']} to {args.dest}: {len(manifest['files'])} files"  # noqa: T201
                  + (f"; missing: {', '.join(manifest['missing'])}" if manifest["missing"] else ""))
            return 0
        pages = {page: page.read_text() for page in args.pages or documents()}
        rendered = {page: render_readme(text, args.results) for page, text in pages.items()}
    except ResultsError as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    stale = [page for page in pages if rendered[page] != pages[page]]
    if args.check and stale:
        for page in stale:
            diff = difflib.unified_diff(pages[page].splitlines(True), rendered[page].splitlines(True), str(page), "generated")
            print("".join(diff), end="", file=sys.stderr)  # noqa: T201
            print(f"{page} disagrees with {args.results}: run `python -m mift_kedro.results render-readme`", file=sys.stderr)  # noqa: T201
        return 1
    for page in pages:
        if page in stale:
            page.write_text(rendered[page])
        if readme_blocks(rendered[page]) or args.pages:
            state = "regenerated" if page in stale else "up to date"
            print(f"{page}: {len(readme_blocks(rendered[page]))} results block(s) {state}")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
