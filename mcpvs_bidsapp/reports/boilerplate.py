"""Methods boilerplate for papers, with its references (mcpvs_bidsapp/data/boilerplate.bib).

As in fMRIPrep, the text says what was run, so users can paste it into a methods section;
it changes with the PVS method and the regions method that actually made the outputs.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from mcpvs_bidsapp import __version__, methods
from mcpvs_bidsapp.outputs.provenance import N4Mask

BIBFILE = Path(__file__).resolve().parents[1] / "data" / "boilerplate.bib"
_ENTRY = re.compile(r"@\w+\{(?P<key>[^,]+),(?P<body>.*?)\n\}", re.S)
_FIELD = re.compile(r"(\w+)\s*=\s*\{(.*?)\}\s*(?:,|$)", re.S)


@lru_cache(maxsize=1)
def references() -> dict[str, dict]:
    """{key: fields} of the BibTeX file (a tiny reader: one level of braces is all it holds)."""
    entries = {}
    for match in _ENTRY.finditer(BIBFILE.read_text()):
        fields = {k.lower(): " ".join(v.split()) for k, v in _FIELD.findall(match["body"])}
        fields["_bibtex"] = match.group(0)
        entries[match["key"].strip()] = fields
    return entries


def _surname(author: str) -> str:
    return author.split(",")[0].strip()


def cite(key: str) -> str:
    """Author-year citation, as in the paper: (Isensee et al., 2021)."""
    ref = references()[key]
    authors = ref["author"].split(" and ")
    first = _surname(authors[0])
    names = first if len(authors) == 1 else f"{first} et al."
    return f"{names}, {ref['year']}"


def format_reference(key: str) -> str:
    ref = references()[key]
    authors = [a.strip() for a in ref["author"].split(" and ")]
    short = []
    for author in authors[:6]:
        surname, _, given = author.partition(",")
        initials = "".join(part[0] for part in given.replace("-", " ").split() if part)
        short.append(f"{surname.strip()} {initials}".strip())
    names = ", ".join(short) + (", et al." if len(authors) > 6 else "")
    venue = ref.get("journal") or ref.get("booktitle", "")
    details = "".join(
        [
            f" {ref['volume']}" if ref.get("volume") else "",
            f"({ref['number']})" if ref.get("number") else "",
            f", {ref['pages'].replace('--', '–')}" if ref.get("pages") else "",
        ]
    )
    doi = f" doi:{ref['doi']}" if ref.get("doi") else ""
    return f"{names} ({ref['year']}). {ref['title']}. {venue}{details}.{doi}"


def methods_boilerplate(provenance: dict, *, n4_mask: N4Mask | None = None) -> dict:
    """Methods paragraphs and the references they cite, for the method that really ran."""
    methods.load_builtin()
    method = str(provenance.get("Method", "n/a"))
    regions = str(provenance.get("Regions", "n/a"))
    scheme = methods.REGION_SCHEMES.get(regions)
    cited: list[str] = []

    def c(*keys: str) -> str:
        for key in keys:
            if key not in cited:
                cited.append(key)
        return "(" + "; ".join(cite(k) for k in keys) + ")"

    intro = (
        f"Perivascular spaces (PVS) were segmented and measured on 3D T1-weighted images with "
        f"mcpvs {__version__}, an implementation of the mcPVS-Net pipeline "
        f"{c('huang2024mcpvsnet')} built on Nipype {c('gorgolewski2011nipype')}."
    )
    if not provenance:  # nothing ran to the end: no claim about how it was preprocessed
        paragraphs = [intro]
    else:
        # the brain mask comes from the region scheme
        extraction = scheme.extraction_text(c) if scheme else "brain-extracted"
        n4_text = n4_mask.methods_text if n4_mask else "on the brain-masked image"
        paragraphs = [
            f"{intro} Each T1w image was {extraction}, corrected for intensity non-uniformity "
            f"with N4 {c('tustison2010n4')} {n4_text} (shrink factor 2, B-spline distance "
            f"100 mm), and intensity-normalised with fuzzy c-means white-matter normalisation "
            f"{c('reinhold2019fcm')}, as in the original work."
        ]
    if method in methods.SEGMENTERS:
        paragraphs.append(methods.SEGMENTERS[method].methods_text(provenance, c))
    if not provenance:  # nothing was segmented (every T1w failed): say only what was tried
        paragraphs.append("No T1w image of this participant was segmented; see Errors.")
        return {
            "paragraphs": paragraphs,
            "references": [format_reference(k) for k in cited],
            "bibtex": "\n\n".join(references()[k]["_bibtex"] for k in cited),
        }
    regions_text = (
        scheme.regions_text(c)
        if scheme
        else f"mcpvs's '{regions}' regions method (see the measures sidecar)"
    )
    paragraphs.append(
        f"Basal ganglia (BG) and cerebral white matter (WM) regions came from {regions_text}. "
        "PVS clusters were 26-connected components of the mask, assigned to the region of "
        "their centroid; PVS volumes were normalised as PVSnm = 10^6 × volume / ICV "
        f"{c('huang2024mcpvsnet')}."
    )
    return {
        "paragraphs": paragraphs,
        "references": [format_reference(k) for k in cited],
        "bibtex": "\n\n".join(references()[k]["_bibtex"] for k in cited),
    }
