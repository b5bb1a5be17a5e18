"""SpeciesNet taxonomy for camera-trap labels: the taxon index, COCO class mapping, roll-up,
geofencing and herd smoothing. The `animals` skill builds on these; none of it runs a model."""

from batchvision.taxonomy.coco import (
    DetectorCategory,
    category_taxon,
    coco_category,
    coco_taxon,
)
from batchvision.taxonomy.countries import (
    UnknownCountryError,
    UnknownRegionError,
    normalize_country,
    normalize_region,
)
from batchvision.taxonomy.data import SpeciesNetFiles
from batchvision.taxonomy.geofence import Geofence, GeofenceFormatError, load_geofence
from batchvision.taxonomy.herd import smooth_herd
from batchvision.taxonomy.rollup import Rollup, roll_up
from batchvision.taxonomy.tree import (
    Level,
    Taxon,
    Taxonomy,
    TaxonomyFormatError,
    UnknownTaxonError,
    load_taxonomy,
)

__all__ = [
    "DetectorCategory",
    "Geofence",
    "GeofenceFormatError",
    "Level",
    "Rollup",
    "SpeciesNetFiles",
    "Taxon",
    "Taxonomy",
    "TaxonomyFormatError",
    "UnknownCountryError",
    "UnknownRegionError",
    "UnknownTaxonError",
    "category_taxon",
    "coco_category",
    "coco_taxon",
    "load_geofence",
    "load_taxonomy",
    "normalize_country",
    "normalize_region",
    "roll_up",
    "smooth_herd",
]
