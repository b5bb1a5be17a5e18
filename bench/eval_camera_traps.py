"""Accuracy of the `animals` skill on ../shared/evaldata/camera_traps (21 labelled images).

Runs the server's own path in-process (`Pipeline`: intake decode with the JPEG draft, the
`animals` skill with its default detector and SpeciesNet taxonomy labels) once over every image
at the skill's default threshold (0.2; `--threshold`), then scores two things.

1. Categories, per image. The truth is one category per image: animal, person, vehicle or
   empty. The predicted set of an image is every category among its annotations (`human` counts
   as person), or {empty} when it has none, so one image can be predicted animal AND person.
   For each category C:
     TP = images whose truth is C and whose predicted set holds C
     FP = images whose predicted set holds C but whose truth is another category
     FN = images whose truth is C and whose predicted set lacks C
     precision = TP / (TP + FP)   (None when nothing was predicted C)
     recall    = TP / (TP + FN)   (None when no image is truly C)
   "exact" counts images whose predicted set is exactly {truth}. The truth names one category,
   so a real but unlabelled person behind an animal would count as a person false positive.

2. Taxonomy, on the animal images whose species label resolves to a SpeciesNet taxon. The
   label strings are common names, free text or notes ("heron", "sage-grouse (small, hard)"):
   a parenthesised note is dropped, the rest is looked up in the taxonomy (`Taxonomy.lookup`),
   and the few names the taxonomy lacks map through ALIASES to the taxon that name really
   pins down (a "heron" is the family Ardeidae, a "wading bird" only the class Aves). The
   prediction is the taxonomy of the image's top-scoring animal annotation. At each level L
   (class, order, family, genus, species) an image whose truth reaches L is
     correct  the prediction names L and its ranks down to L equal the truth's
     wrong    it names L and they differ
     coarse   it does not reach L (a COCO `bird` is class Aves only)
     missed   no animal annotation at all
   accuracy = correct / images whose truth reaches L; "when named" = correct / (correct +
   wrong): how often a label that claims level L is right ("species where both exist").

    .venv/bin/python bench/eval_camera_traps.py [--threshold 0.2] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from batchvision.skills.animals import AnimalsParams, find_speciesnet
from batchvision.taxonomy import Level, Taxon, Taxonomy, UnknownTaxonError
from bench_support import analyze_files

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "evaldata" / "camera_traps"
DEFAULT_MODELS = REPO.parent / "shared" / "models"
DEFAULT_THRESHOLD = float(AnimalsParams.model_fields["threshold"].default)

CATEGORIES = ("animal", "person", "vehicle", "empty")
# The skill's annotation categories, as the labels name them.
PREDICTED = {"animal": "animal", "human": "person", "vehicle": "vehicle"}
LEVELS = (Level.CLASS, Level.ORDER, Level.FAMILY, Level.GENUS, Level.SPECIES)
RANK_NAMES = ("class", "order", "family", "genus", "species")  # the annotation taxonomy keys

# Truth names the taxonomy has no entry for -> the SpeciesNet key of what the name pins down.
ALIASES: Mapping[str, str] = {
    "chicken": "aves;galliformes;phasianidae;gallus;gallus domesticus",  # domestic chicken
    "beaver": "mammalia;rodentia;castoridae;castor;",  # American or Eurasian: genus Castor
    "heron": "aves;pelecaniformes;ardeidae;;",  # any heron: the family Ardeidae
    "pheasant": "aves;galliformes;phasianidae;;",  # "silver by appearance" is a guess
    "sage-grouse": "aves;galliformes;phasianidae;centrocercus;",  # greater or Gunnison
    "wading bird in flight": "aves;;;;",  # heron, stork, ibis, crane...: only the class
    "reptile in burrow": "reptilia;;;;",
}


# ---------------------------------------------------------------- truth


def clean_name(species: str) -> str:
    """The name part of a label: parenthesised notes dropped, lower case, single spaces."""
    return " ".join(re.sub(r"\(.*?\)", " ", species).split()).casefold()


def truth_taxon(species: str | None, taxonomy: Taxonomy) -> Taxon | None:
    """The SpeciesNet taxon a truth label names; None for no label or an unresolvable one."""
    if not species:
        return None
    name = clean_name(species)
    if name in ALIASES:
        return taxonomy.by_key(ALIASES[name])
    for candidate in (name, name.replace("gray", "grey"), name.replace("grey", "gray")):
        try:
            return taxonomy.lookup(candidate)
        except UnknownTaxonError:
            continue
    return None


# ---------------------------------------------------------------- scores


@dataclass
class CategoryScore:
    images: int = 0  # truth is this category
    predicted: int = 0  # predicted set holds it
    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def recall(self) -> float | None:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None


@dataclass
class LevelScore:
    images: int = 0  # animal images whose truth reaches this level
    correct: int = 0
    wrong: int = 0
    coarse: int = 0
    missed: int = 0

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.images if self.images else None

    @property
    def when_named(self) -> float | None:
        named = self.correct + self.wrong
        return self.correct / named if named else None


@dataclass
class ImageEval:
    file: str
    truth: str
    species: str | None
    predicted: list[str]  # sorted categories; ["empty"] when no annotation
    labels: list[str]  # every annotation: "category:label score", best first
    truth_taxon: str | None = None  # "key (common name)" for animal images
    truth_level: str | None = None
    top_label: str | None = None  # the top animal annotation's label
    top_taxonomy: dict[str, str] | None = None
    levels: dict[str, str] = field(default_factory=dict)  # level -> correct|wrong|coarse|missed
    error: str | None = None


@dataclass
class Report:
    threshold: float
    model: str | None
    images: list[ImageEval]
    categories: dict[str, CategoryScore]
    levels: dict[str, LevelScore]
    exact: int
    unresolved: list[str]  # animal images whose species label is not in the taxonomy
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        def category(score: CategoryScore) -> dict[str, Any]:
            return {**asdict(score), "precision": score.precision, "recall": score.recall}

        def level(score: LevelScore) -> dict[str, Any]:
            return {**asdict(score), "accuracy": score.accuracy, "when_named": score.when_named}

        return {
            "threshold": self.threshold,
            "model": self.model,
            "image_count": len(self.images),
            "exact": self.exact,
            "seconds": round(self.seconds, 3),
            "categories": {name: category(s) for name, s in self.categories.items()},
            "taxonomy_levels": {name: level(s) for name, s in self.levels.items()},
            "unresolved_species": self.unresolved,
            "images": [asdict(image) for image in self.images],
        }


def predicted_categories(annotations: Sequence[Mapping[str, Any]]) -> list[str]:
    found = {PREDICTED[a["category"]] for a in annotations if a["category"] in PREDICTED}
    return sorted(found) or ["empty"]


def level_outcome(truth: Taxon, predicted: Mapping[str, str] | None, level: Level) -> str:
    if predicted is None:
        return "missed"
    depth = int(level)
    ranks = [predicted.get(name, "") or "" for name in RANK_NAMES[:depth]]
    if not ranks[-1]:
        return "coarse"
    return "correct" if tuple(ranks) == truth.ranks[:depth] else "wrong"


def score(
    labels: Mapping[str, Mapping[str, Any]],
    outputs: Mapping[str, Mapping[str, Any] | str],
    taxonomy: Taxonomy,
    threshold: float,
) -> Report:
    """`outputs`: the skill's output per file name, or an error message where it failed."""
    categories = {name: CategoryScore() for name in CATEGORIES}
    levels = {str(level): LevelScore() for level in LEVELS}
    images, unresolved, exact, model = [], [], 0, None
    for name, label in sorted(labels.items()):
        truth = label["category"]
        output = outputs.get(name, "no output")
        error = output if isinstance(output, str) else None
        annotations = [] if isinstance(output, str) else list(output["annotations"])
        if not isinstance(output, str):
            model = model or output.get("model")
        annotations.sort(key=lambda a: -float(a["score"]))
        predicted = predicted_categories(annotations)
        image = ImageEval(
            file=name,
            truth=truth,
            species=label.get("species"),
            predicted=predicted,
            labels=[f"{a['category']}:{a['label']} {float(a['score']):.2f}" for a in annotations],
            error=error,
        )
        categories[truth].images += 1
        exact += predicted == [truth]
        for category, per in categories.items():
            if category in predicted:
                per.predicted += 1
                if category == truth:
                    per.tp += 1
                else:
                    per.fp += 1
            elif category == truth:
                per.fn += 1
        if truth == "animal":
            taxon = truth_taxon(label.get("species"), taxonomy)
            if taxon is None:
                unresolved.append(name)
            else:
                _score_taxon(image, taxon, annotations, levels)
        images.append(image)
    return Report(threshold, model, images, categories, levels, exact, unresolved)


def _score_taxon(
    image: ImageEval,
    taxon: Taxon,
    annotations: Sequence[Mapping[str, Any]],
    levels: dict[str, LevelScore],
) -> None:
    image.truth_taxon = f"{taxon.key} ({taxon.common_name})"
    image.truth_level = str(taxon.level)
    top = next((a for a in annotations if a["category"] == "animal"), None)
    if top is not None:
        image.top_label = str(top["label"])
        image.top_taxonomy = dict(top["taxonomy"]) if top.get("taxonomy") else {}
    for level in LEVELS:
        if taxon.level < level:
            continue
        outcome = level_outcome(taxon, image.top_taxonomy if top is not None else None, level)
        image.levels[str(level)] = outcome
        per = levels[str(level)]
        per.images += 1
        setattr(per, outcome, getattr(per, outcome) + 1)


# ---------------------------------------------------------------- running the skill


async def run_skill(
    data_dir: Path, names: Sequence[str], params: dict[str, Any], model_dir: Path
) -> dict[str, dict[str, Any] | str]:
    results = await analyze_files(data_dir / "images", names, "animals", params, [model_dir])
    outputs: dict[str, dict[str, Any] | str] = {}
    for name, result in zip(names, results, strict=True):
        if result.errors:
            outputs[name] = "; ".join(f"{e.code.value}: {e.message}" for e in result.errors)
        else:
            outputs[name] = result.outputs["animals"]
    return outputs


def load_taxonomy(model_dir: Path) -> Taxonomy:
    files = find_speciesnet([model_dir])
    if files is None:
        raise SystemExit(f"no SpeciesNet taxonomy under {model_dir}/speciesnet_data")
    return files.taxonomy_index()


def evaluate(
    data_dir: Path = DEFAULT_DATA,
    model_dir: Path = DEFAULT_MODELS,
    threshold: float = DEFAULT_THRESHOLD,
    names: Sequence[str] | None = None,
) -> Report:
    labels: dict[str, dict[str, Any]] = json.loads((data_dir / "labels.json").read_text())
    if names is not None:
        labels = {name: labels[name] for name in names}
    start = time.perf_counter()
    params = {"threshold": threshold}
    outputs = asyncio.run(run_skill(data_dir, sorted(labels), params, model_dir))
    report = score(labels, outputs, load_taxonomy(model_dir), threshold)
    report.seconds = time.perf_counter() - start
    return report


# ---------------------------------------------------------------- output


def _fraction(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def print_report(report: Report, data_dir: Path) -> None:
    print(
        f"animals skill ({report.model}) on {data_dir}: {len(report.images)} images, "
        f"threshold {report.threshold}, {report.seconds:.1f} s"
    )
    print("\nper image (truth -> predicted categories; annotations best first):")
    for image in report.images:
        print(f"  {image.file}: {image.truth} -> {'+'.join(image.predicted)}")
        if image.species:
            print(f"      truth species: {image.species!r}", end="")
            if image.truth_taxon:
                print(f" = {image.truth_taxon}, {image.truth_level} level", end="")
            print()
        print(f"      annotations: {', '.join(image.labels) or 'none'}")
        if image.levels:
            outcomes = ", ".join(f"{lvl} {outcome}" for lvl, outcome in image.levels.items())
            print(f"      top animal label: {image.top_label or 'none'} -> {outcomes}")
        if image.error:
            print(f"      ERROR: {image.error}")

    print("\nimage-level categories (precision = TP/(TP+FP), recall = TP/(TP+FN); an image")
    print("can be predicted several categories; 'empty' = no annotation at all):\n")
    print("| category | truth images | predicted | TP | FP | FN | precision | recall |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, s in report.categories.items():
        print(
            f"| {name} | {s.images} | {s.predicted} | {s.tp} | {s.fp} | {s.fn} "
            f"| {_fraction(s.precision)} | {_fraction(s.recall)} |"
        )
    print(f"\nexact (predicted set == {{truth}}): {report.exact}/{len(report.images)}")

    resolved = sum(1 for image in report.images if image.truth_taxon)
    print(
        f"\ntaxonomy of the top animal annotation ({resolved} animal images with a resolvable "
        "species label; a level counts only images whose truth reaches it):\n"
    )
    print("| level | images | correct | wrong | too coarse | no animal | accuracy | when named |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, lv in report.levels.items():
        print(
            f"| {name} | {lv.images} | {lv.correct} | {lv.wrong} | {lv.coarse} | {lv.missed} "
            f"| {_fraction(lv.accuracy)} | {_fraction(lv.when_named)} |"
        )
    if report.unresolved:
        print(f"\nspecies labels not in the taxonomy (not scored): {report.unresolved}")


def main(argv: Sequence[str] | None = None) -> Report:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--models", type=Path, default=DEFAULT_MODELS)
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    parser.add_argument("--json", type=Path, help="write the full report as JSON here")
    args = parser.parse_args(argv)
    report = evaluate(args.data, args.models, args.threshold)
    print_report(report, args.data)
    if args.json:
        args.json.write_text(json.dumps(report.to_json(), indent=1) + "\n")
        print(f"\nwrote {args.json}")
    return report


if __name__ == "__main__":
    main()
