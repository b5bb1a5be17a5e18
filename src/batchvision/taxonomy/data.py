"""Where SpeciesNet's data files lie in a model directory (e.g. `../shared/models/speciesnet_data`).

A SpeciesNet model package keeps them side by side: `taxonomy_release.txt`, the classifier's label
list (`<model>.labels.txt`), `geofence_release.json` (not at hand offline) and the fixes CSV its
builder applies, `geofence_fixes.csv`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from batchvision.taxonomy.geofence import Geofence, load_geofence
from batchvision.taxonomy.tree import Taxonomy, load_taxonomy

TAXONOMY_FILE = "taxonomy_release.txt"
GEOFENCE_RELEASE_FILE = "geofence_release.json"
GEOFENCE_FIXES_FILE = "geofence_fixes.csv"
LABELS_GLOB = "*.labels.txt"


@dataclass(frozen=True, slots=True)
class SpeciesNetFiles:
    """The SpeciesNet data files found in one directory; absent optional files are None."""

    taxonomy: Path
    labels: Path | None
    geofence_release: Path | None
    geofence_fixes: Path | None

    @classmethod
    def find(cls, directory: Path) -> SpeciesNetFiles:
        """Locate the files; the taxonomy is required, the rest optional."""
        taxonomy = directory / TAXONOMY_FILE
        if not taxonomy.is_file():
            raise FileNotFoundError(f"no SpeciesNet {TAXONOMY_FILE} in {directory}")
        # More than one label list would make the classifier's output order ambiguous.
        labels = sorted(directory.glob(LABELS_GLOB))
        if len(labels) > 1:
            names = ", ".join(path.name for path in labels)
            raise ValueError(f"{directory} holds several label lists ({names}); keep one")
        return cls(
            taxonomy=taxonomy,
            labels=labels[0] if labels else None,
            geofence_release=_optional(directory / GEOFENCE_RELEASE_FILE),
            geofence_fixes=_optional(directory / GEOFENCE_FIXES_FILE),
        )

    def taxonomy_index(self) -> Taxonomy:
        """The (cached) taxonomy of these files."""
        return load_taxonomy(self.taxonomy, self.labels)

    def geofence(self) -> Geofence:
        """The (cached) geofence of these files: empty, and saying so, when there are none."""
        return load_geofence(self.geofence_release, self.geofence_fixes)


def _optional(path: Path) -> Path | None:
    return path if path.is_file() else None
