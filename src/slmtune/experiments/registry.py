"""The one registry of studies, read by the CLI (one subcommand each), `slmtune study` (its parts), the planner
and the report.

Each study is a module of slmtune.experiments that implements the study protocol (slmtune.experiments.protocol:
its config, run, plan, budget reductions, printed report and report.html section), checked when it is loaded.
The registry itself is plain data, so `slmtune --help` lists every study and its flags without importing torch.
A new study is one module and one `StudyKind` here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from slmtune.serve import ENGINES

if TYPE_CHECKING:
    from slmtune.experiments.protocol import StudyModule
    from slmtune.experiments.workers import Execution


@dataclass(frozen=True)
class Flag:
    """A CLI option of one study, mapped onto a field of its config (or an option of its `run`)."""

    option: str
    """The flag, e.g. `--seeds`."""
    field: str
    """The config field it sets (or the `run` keyword with `to_run`)."""
    help: str
    parse: str = "str"
    """`str`, `int`, `ints` / `floats` / `words` (comma-separated lists), `append` (repeatable), `switch` (sets
    true), `off` (sets false)."""
    choices: tuple[str, ...] | None = None
    to_run: bool = False
    """Passed to `run(...)` as a keyword instead of setting a config field."""

    def argparse_kwargs(self) -> dict:
        """`add_argument` keywords for this flag (its value lands in `<field>_flag`)."""
        extra = {"switch": {"action": "store_true"}, "off": {"action": "store_const", "const": False},
                 "append": {"action": "append"}, "int": {"type": int}}
        kwargs = {"dest": self.field + "_flag", "help": self.help, **extra.get(self.parse, {})}
        if self.choices:
            kwargs["choices"] = self.choices
        elif self.parse not in ("switch", "off"):
            kwargs["metavar"] = self.option.lstrip("-").upper().replace("-", "_")
        return kwargs

    def value(self, text):
        """The flag's command-line text as its config value; a one-line error for a malformed list."""
        if text is None or self.parse in ("str", "int", "append", "switch", "off"):
            return text
        items = [v.strip() for v in text.split(",") if v.strip()]
        if self.parse == "words":
            return items
        kind = int if self.parse == "ints" else float
        try:
            return [kind(v) for v in items]
        except ValueError:
            from slmtune.errors import SlmtuneError

            what = "integers" if kind is int else "numbers"
            raise SlmtuneError(f"{self.option} takes {what} separated by commas, got {text!r}") from None


@dataclass(frozen=True)
class StudyKind:
    name: str
    """The kind, as `study:` in a study file and as a part's kind in `slmtune study`."""
    module: str
    """Module under slmtune.experiments that implements the protocol."""
    help: str
    command: str | None = None
    """The CLI subcommand (default: the name; None: no subcommand of its own)."""
    config_file: str = ""
    """The shipped study config, shown in --help."""
    flags: tuple[Flag, ...] = ()

    def load(self) -> StudyModule:
        from slmtune.experiments.protocol import check_protocol

        return check_protocol(importlib.import_module(f"slmtune.experiments.{self.module}"))

    @property
    def cli(self) -> str | None:
        return self.command if self.command is not None else self.name

    @property
    def adaptive_fields(self) -> tuple[str, ...]:
        """The config fields that make this study adaptive (racing, sequential seeds): what its `--exhaustive`
        turns off, and `slmtune study --exhaustive` in each part of this kind."""
        return tuple(flag.field for flag in self.flags if flag.option == "--exhaustive")

    def run_from_cli(self, flag_text: dict[str, object], config_file: str | None = None,
                     study_dir: str | None = None, overrides: list[str] | None = None,
                     execution: Execution | None = None, **fields) -> str:
        """Run this study from its command line: `flag_text` (config field -> the flag's text) and `fields`
        (e.g. name, recipe) onto its config, then its `run` as `execution` says (worker processes, a shared queue,
        or a worker of a running study: slmtune.experiments.workers); returns what the command prints."""
        from slmtune.experiments.common import load_study_config
        from slmtune.experiments.workers import ALONE, run_study

        module = self.load()
        values, options = {k: v for k, v in fields.items() if v is not None}, {}
        for flag in self.flags:
            value = flag.value(flag_text.get(flag.field))
            if value is not None and (value is not False or flag.parse == "off"):  # an off flag given: False
                (options if flag.to_run else values)[flag.field] = value
        values = module.from_cli(values, from_file=bool(config_file))
        cfg = load_study_config(module.CONFIG, config_file, **values)
        summary = run_study(module, cfg, study_dir, list(overrides or []), options, execution or ALONE)
        if summary is None:
            return f"slmtune {self.cli} {getattr(cfg, 'name', '')}: worker done"
        return "\n".join([f"\nslmtune {self.cli} {getattr(cfg, 'name', '')}: done", *module.report(summary)])


SEEDS = "comma-separated seeds, e.g. 42,123,456"
STUDIES: dict[str, StudyKind] = {kind.name: kind for kind in (
    StudyKind("train", "train_part", "one run per recipe (the reference study's baseline part)", command=""),
    StudyKind("sweep", "sweep", "hyperparameter sweep (Optuna; resumable; shareable by workers)",
              config_file="configs/studies/sweep-*.yaml", flags=(
                  Flag("--space", "space", "lr, wd, grid (5x5), rank, alpha, batch or epochs"),
                  Flag("--method", "method", "lora or full: the method every trial trains", choices=("lora", "full")),
                  Flag("--search", "search", "TPE search with N trials instead of a grid", parse="int"),
                  Flag("--storage", "storage", "Optuna storage URL (default: sqlite in the study folder); "
                                               "postgresql://... lets machines share one sweep"),
                  Flag("--worker", "worker", "join an existing sweep and take its open trials", parse="switch",
                       to_run=True),
                  Flag("--exhaustive", "race", "train every grid point to the end (default: race, cutting points "
                       "behind the leader on validation after each epoch rung)", parse="off"))),
    StudyKind("seeds", "seeds", "repeat a recipe over seeds; compare two recipes pairwise",
              config_file="configs/studies/seeds.yaml", flags=(
                  Flag("--seeds", "seeds", SEEDS, parse="ints"),
                  Flag("--num-runs", "num_runs", "draw this many seeds instead", parse="int"),
                  Flag("--compare", "compare", "second recipe run on the same seeds, e.g. configs/agnews-full.yaml"),
                  Flag("--exhaustive", "sequential", "run every seed (default with --compare: stop once the "
                       "comparison is decided, from 3 seeds)", parse="off"))),
    StudyKind("zeroshot", "zeroshot", "zero-shot baselines: untrained head, label-prompt embeddings, NLI",
              config_file="configs/studies/zeroshot.yaml", flags=(
                  Flag("--method", "methods", "untrained-head, names, descriptions, templates, custom, nli "
                                              "(repeatable)", parse="append"),
                  Flag("--template", "templates", 'your own template, e.g. "A story on {}." (repeatable)',
                       parse="append"),
                  Flag("--nli-model", "nli_model", "an NLI model id or folder for the nli method"))),
    StudyKind("fewshot", "fewshot", "k rows per class, several draws: probe, prompt, LoRA, full, SetFit",
              config_file="configs/studies/fewshot.yaml", flags=(
                  Flag("--shots", "shots", "rows per class, e.g. 1,2,5,10,20,50,100", parse="ints"),
                  Flag("--draws", "draws", "random draws per size", parse="int"),
                  Flag("--methods", "methods", "comma-separated: probe,prompt,lora,full,setfit", parse="words"))),
    StudyKind("scaling", "scaling", "accuracy vs training rows with a power-law fit",
              config_file="configs/studies/scaling.yaml", flags=(
                  Flag("--sizes", "sizes", "training rows, e.g. 10,50,100,200,500,1000,2000,5000,10000",
                       parse="ints"),
                  Flag("--seeds", "seeds", SEEDS, parse="ints"))),
    StudyKind("augmentation", "augmentation", "augmentation ratios x operations vs the no-augmentation control",
              command="augment", config_file="configs/studies/augmentation.yaml", flags=(
                  Flag("--ratios", "ratios", "augmented rows per row, e.g. 0,0.25,0.5,0.75,1", parse="floats"),
                  Flag("--ops", "operations", "operation sets, comma-separated; join operations with +, e.g. "
                                              "eda,synonym+swap,backtranslate (eda = synonym+insert+delete+swap)"),
                  Flag("--sizes", "sizes", "training rows, e.g. 200,2400", parse="ints"),
                  Flag("--seeds", "seeds", SEEDS, parse="ints"),
                  Flag("--back-translation", "back_translation",
                       "apertium[:eng-spa] or marian[:<forward>,<backward>]"))),
    StudyKind("active", "active", "active learning: random vs uncertainty sampling",
              config_file="configs/studies/active.yaml", flags=(
                  Flag("--strategies", "strategies", "comma-separated: random, least_confidence, margin, entropy, "
                                                     "class_balanced", parse="words"),
                  Flag("--checkpoints", "checkpoints", "labelled rows, e.g. 100,500,1000", parse="ints"),
                  Flag("--seeds", "seeds", SEEDS, parse="ints"),
                  Flag("--pool-size", "pool_size", "unlabelled pool size", parse="int"),
                  Flag("--backend", "backend", "pool scoring backend",
                       choices=ENGINES))),
)}
