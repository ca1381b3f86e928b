"""Same-item verification: is a retrieved listing the very item of the query photo?

Why not one cosine threshold: a global embedding scores a look-alike (every pullover of
Fashion-MNIST, another colour of the same hoodie) as high as an edited copy of the same photo,
and where that line falls differs per catalog. Two kinds of evidence a global vector does not
carry tell them apart:

* **Geometry.** SIFT keypoints matched between the two photos (Lowe's ratio test), then a
  RANSAC homography: the matches that agree with one plane-to-plane mapping are *inliers*. A
  copy of the same photo, re-encoded, resized, cropped, padded, tagged, brightened or turned
  a little, keeps dozens to hundreds of them; another product, even of the same cut, keeps a
  handful (chance matches on edges that no single mapping explains). The features of one
  photo and the matching are :mod:`search.features`; this module compares and decides.
* **Colour.** The cosine of the two photos' foreground colour histograms
  (:func:`embedding.colour.colour_descriptor`, the colour block of the default vector): the
  other colours of one style share the geometry of its photos, not their colours.

* **Product, not backdrop.** A photo re-shot on a backdrop (a gradient, a texture) has no
  border that tells its background; GrabCut segments its product (:func:`product_mask`) and
  two aligned photos are compared over their agreeing masks. The backdrop's colours used to
  refuse other lines of a brand on one pack layout, by accident; without it, the *print
  check* does that on purpose: grey levels must agree cell by cell, where a name or a logo
  differs (:func:`_print_agreement`); cells under a colour of the query's own (a sticker, a
  tag) say nothing of the print beneath and are left out while they are few.

:class:`SameItemRule` combines them: either the geometry confirms the match (and the photos,
aligned by it, show no part of the product in another colour, and agree in grey levels,
brightness and colour, over the whole product, or after
one per-channel light map when the photo was taken again under another light (or one shaded
map, a tone curve and a smooth shading across it, when that light was uneven), or in hue
alone when a shop graded its colours, or, when a sticker, a tag or a label lies over it,
around that cover (:attr:`Alignment.cover`), or, when an overlay hides part of it, near the
inliers; a pair refused as RANSAC aligned it is aligned again on the grey levels, for a
mapping a pixel off), or a plain product with too few keypoints lines up without them
(:func:`aligned_without_keypoints`) and agrees under stricter limits, or the two photos are
near-identical as a whole (global cosine at the duplicate level: a 28 px Fashion-MNIST
article). Its numbers were calibrated with
``bench/calibrate_same_item.py`` on the protocols of ``bench/protocols_same_item.py``; see
docs/matching.md.

Cost: features of one photo at ``VERIFY_SIZE`` (320 px on the long side, the size the search
API decodes a 640 px JPEG query to) take ~8-15 ms of CPU, matching a pair ~1-2 ms. Gallery-side
features are kept in a small LRU cache keyed by ``image_ref``, so a catalog's popular items
cost only the matching.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, Literal, TypeVar

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image

from embedding.colour import foreground_weights
from embedding.decode import decode_image
from ingest.fetch import ImageFetcher
from ingest.reindex import stored_image
from search.features import (
    KeypointMatch,
    PhotoFeatures,
    SilhouetteAgreement,
    coarse_homography,
    in_half_px,
    mirrored,
    photo_features,
    ransac,
    ratio_matches,
    refine_homography,
    silhouette_agreement,
    unmirror,
)
from search.scene import VERIFY_SIZE

VOTE_FEATURES = 100
"""Query keypoints (evenly spread through its list) whose descriptors vote for a listing
photo in :meth:`SameItemVerifier.keypoint_votes`."""
CACHE_SIZE = 2048
"""Gallery photos whose features are kept (~40 KB each, ~65 KB with a product mask)."""
Overlay = Literal["open", "covers", "closed", "relit"]
"""When the rule's overlay route may accept a pair: ``open`` always; ``covers`` only for what a
cover explains: where the grey levels over the whole compared region disagree
(``correlation < min_correlation``), as a banner makes them, or where they agree but no part
is recoloured and the colours near the inliers agree as a copy's (``max_cover_local_shift``:
a sticker too small to move the correlation); not a recoloured band with the print beneath
it intact (another flavour of one pack layout); ``closed`` never (between two listings: the
cover and shaded light routes closed too); ``relit``: between two listings, the one re-shot
on a backdrop as the query, the shaded light route alone
(:meth:`SameItemRule.only_colours_differ` says when it is asked)."""
COLOUR_BLUR_PX = 1.5
CHROMA_GAIN = (0.7, 1.4)
"""Range of the global chroma gain an edit may apply (see :func:`_colour_shifts`)."""
HUE_CHROMA = 10.0
"""Lab chroma (a*, b* distance from grey) from which a pixel's hue counts
(:func:`_hue_agreement`): below it, re-encoding noise turns the hue of a grey pixel at random."""
CLIP_MARGIN = 6
"""A channel within this of 0 or 255 is clipped: there a saturation or contrast edit turned
the hue, so a grading is fitted on the pixels away from it (:func:`_near_clipping`,
:func:`_fit_grading`)."""
CLIP_PX = 3
"""How far (px at half ``VERIFY_SIZE``) a clipped channel reaches into the softened colours:
twice ``COLOUR_BLUR_PX``."""
MIN_GRADING_GAIN = 0.5
"""The smallest gain a grading's fit may give the channel itself (:func:`_fit_grading`):
saturation times contrast. Below it the fit is taking one colour to another (a negative
gain mirrors every hue, an orange fitted to a purple), not grading one."""
NO_GRADING = np.array([1.0, 0.0, 0.0, 0.0])
"""The weights of :func:`_grading_terms` that leave a photo as it is (read-only)."""
NO_GRADING.setflags(write=False)
HUE_SPAN = 24
"""Grey levels by which a pixel's largest and smallest channels must differ for its hue on
the RGB hexcone to be read (:func:`_hue_agreement`): closer, re-encoding noise turns it by
tens of degrees."""
SHIFT_PERCENTILES = (75, 90, 95, 98)
"""Percentiles of the aligned pixels' chroma distance kept as evidence (:class:`Alignment`)."""
MIN_OVERLAP_PX = 64
"""Aligned foreground pixels (at half ``VERIFY_SIZE``) needed to compare two photos."""
NEAR_INLIER_PX = 8
"""Radius (px at half ``VERIFY_SIZE``) of an inlier's neighbourhood."""
COARSE_REFINE_REACH = 0.05
"""A keypoint-free alignment is refined only when it falls short of the rule's limits and
its correlation is within this of ``SameItemRule.coarse_correlation``: refining raised a
plain copy's by 0.01-0.03, and costs ~30 ms a pair (Fashion-MNIST look-alikes, ~3 a query,
are far below)."""
EDGE_PX = 2
"""Band (px at half ``VERIFY_SIZE``) inside the listing product's outline that is left out of
the colour comparison when the query shows another background around the product: there
each photo's pixels mix the product with its own background (see :func:`_colour_region`)."""
RING_PX = 4
"""Width (px at half ``VERIFY_SIZE``) of the ring just outside the listing product's outline
where the query's background is looked at."""
WHITE_LEVEL = 230
"""A pixel whose every channel reaches this is white background (a catalog photo's)."""
MATCH_DETAIL_SCALE = 1.15
"""A query warped onto the listing at this magnification or more is compared with the
listing at the query's detail (:func:`_at_resolution_of`)."""
SEGMENT_MIN_IOU = 0.7
"""Intersection over union the two aligned product masks need to be compared over."""
PRINT_CELL_PX = 16
"""Side (px at half ``VERIFY_SIZE``) of the cells the print check correlates."""
PRINT_CELL_COVER = 0.6
"""Share of a cell the compared region must cover for the cell to count."""
PRINT_MIN_STD = 8.0
"""Grey-level spread a listing cell needs to count (text, a logo, an edge: not a flat area)."""
FOREIGN_SHIFT = 25.0
"""Lab chroma distance from which an aligned pixel counts as covered by something of another
colour (:func:`_foreign`)."""
WHITE_UNEXPLAINED_SHIFT = 10.0
"""Lab chroma distance from which a pixel the listing shows white is unexplained by the query
(:func:`_white_unexplained`): a white balance the map leaves is ~2-5, a pale variant ~20."""
MAX_FOREIGN_CELLS = 0.3
"""Largest share of the print check's cells left out as covered (:func:`_print_agreement`)."""
PRINT_FINE_CELL_PX = 8
"""Side (px at half ``VERIFY_SIZE``) of the cells of the print check's second look around
covers (:func:`_print_around_covers`): fine enough that a cell holds a few letters of a
name, not a whole line of it."""
PRINT_COVERED_SHARE = 0.1
"""Share of a cell under a cover (:func:`_foreign`) from which the second look leaves it out:
a badge's rim in a corner of a cell is enough to lower its correlation."""
PRINT_PERCENTILE = 10
"""Percentile of the cells' correlations read as the print agreement."""
LIGHT_FIT_SHARE = 70
"""Percent of the compared pixels (those it explains best) a light map is refitted on
(:func:`_light_map`): a flavour band or a recoloured trim must not bend the fit."""
LIGHT_FIT_PIXELS = 1500
"""About how many of the compared pixels the light map is fitted on (~1 ms a pair)."""
SHADINGS = (2, 5)
"""The shadings the shaded light map is fitted with, each its own map: the first 2 terms of
:func:`_shading_terms`, a plane (light falling off one way across the photo), and all 5, a
second-order surface (also a lamp over the product, its light falling off all round it).
The shaded light route accepts a pair that either map explains: the surface's refit on the
pixels it explains best has more freedom and now and then settles on a part that explains
the rest worse than the plane does (docs/matching.md, "Lamp round")."""
RECOLOUR_DELTA = 15.0
"""A compared pixel has another colour (:func:`_recoloured_patches`) when its lightness, after
one fitted lightness map, and its hue differ by this much together (CIE-style L* and hue
difference, ``hypot(dL, dH)``)."""
RECOLOUR_MIN_LIGHTNESS = 30.0
"""L* from which a pixel's hue counts there: the hue of a dark pixel (black trousers, hair)
swings under any saturation edit."""
RECOLOUR_DYE_RATIO = 3.0
"""...or when one photo's chroma is this many times the other's (a white trim dyed orange)..."""
RECOLOUR_DYE_CHROMA = 15.0
"""...and differs by this much: a saturation edit scales a faint colour many times, but by
little."""
RECOLOUR_WINDOW_PX = 7
"""Window (px at half ``VERIFY_SIZE``) over which the two photos' texture is correlated: a
recoloured part keeps its folds and seams, a sticker or a banner over it does not."""
RECOLOUR_MIN_TEXTURE_CORRELATION = 0.5
"""Local grey-level correlation from which a part's texture counts as kept."""
RECOLOUR_FLAT_STD = 4.0
"""Grey-level spread below which a window is flat in a photo (a plain trim: kept if flat in
both)."""
WHITEN_MIN_ALPHA = 0.03
"""Least share of its way to white, in every channel, that makes a query pixel whitened
(:func:`_whitening`): above the blur's and the JPEG's noise."""
WHITEN_MAX_SPREAD = 0.15
"""Most the channels' shares may differ for a whitened pixel: a blend towards white moves
them alike, another hue does not."""
GLARE_BAND_PX = 3
"""Width (px at half ``VERIFY_SIZE``) of the bands inside and outside a whitened patch's
edge that :func:`_in_glare` compares."""
GLARE_EDGE_RATIO = 0.6
"""Least whitening just outside a patch, as a share of the whitening just inside, for the
patch to be a glare (:func:`_in_glare`; a Gaussian glare on the synthetic garment of
tests/test_verify.py read 0.63-0.82, a paler part 0.24-0.55: docs/matching.md, "Glare
round")."""
GLARE_MAX_EDGE = 0.75
"""Most whitening just inside a glare's edge: a part nearly white at its very edge is a
white part (a paler hem on a brightened photo read 0.89-0.99)."""
RECOLOUR_MIN_INLIERS = 10
"""A keypoint alignment with fewer inliers is not looked at for recoloured parts (~5 ms a
pair): the rule's geometric routes refuse it anyway (``SameItemRule.min_inliers``)."""
RECOLOUR_INSET_PX = 2
"""The compared region is shrunk by this much first: along its outline each photo mixes the
product with its own background, and a pixel of misregistration shows as a colour change."""
COVER_DELTA = 30.0
"""Lab distance (lightness and chroma together) from which an aligned pixel counts as under
something of another colour (:func:`_cover`): a sticker, a tag or a label laid over the
product."""
COVER_CLOSE_PX = 5
"""Closing (px at half ``VERIFY_SIZE``) of those pixels before the cover is taken as their
largest patch: the text printed on a sticker is of the product's colour in places."""
COVER_MARGIN_PX = 3
"""Margin (px at half ``VERIFY_SIZE``) around the cover left out of the comparison of the
rest: its outline is soft in both photos."""
TRANSLUCENT_GAINS = (0.05, 0.6)
"""Range of the one gain a translucent cover's blend scales the photo beneath by
(:func:`_blend_fit`: ``covered ~ gain * bare + colour``, ``gain`` = 1 - the overlay's
opacity): from nearly opaque to half transparent. A part of another colour keeps its
contrast (a gain near 1) or scales the channels apart (a hue turned)."""
TRANSLUCENT_GAIN_SPREAD = 0.1
"""Largest difference of the per-channel gains of a translucent cover's blend: an overlay's
opacity is one for every channel."""
TRANSLUCENT_MIN_TEXTURE = 3.0
"""Grey levels (RGB standard deviation) the texture seen through a translucent cover must
keep, once scaled by the blend's gain: below it, it is lost in the photos' noise and JPEG,
and the fit shows nothing through it (a dark sleeve over the skin of another garment's
model fits a nearly opaque black overlay)."""
TRANSLUCENT_MIN_FIT = 0.3
"""Share of the covered photo's variance (R^2) over the patch that the blend must explain:
what else lies in the patch (the logo's own text, a soft outline) is left out of it by the
robust fit (:func:`_fitted_on_best`), not out of this figure's denominator."""
MAX_COVERS = 4
"""How many patches :func:`_cover` measures, largest first (:attr:`Cover.second`): a shop's
copy with two tags met by a query with a flag and a badge differs in four places (two
until the round of the print's second look; docs/matching.md)."""
COVER_SECOND_SHARE = 0.005
"""The smallest second patch :func:`_cover` measures (:attr:`Cover.second`), as a share of
the compared region: below it a patch is a misregistered edge or noise, too small to move
the comparison of the rest."""

_Fit = TypeVar("_Fit")
GalleryLoader = Callable[[str], Image.Image]
"""``image_ref`` -> the stored listing's photo; raises with a reason when it cannot."""


@dataclass(frozen=True)
class HueAgreement:
    """How the hues of two aligned photos compare, over the pixels chromatic in either
    (Lab chroma >= ``HUE_CHROMA``): what a colour grading keeps and another colour does not
    (:func:`_hue_agreement`)."""

    chromatic_share: float
    """Share of the compared pixels that are chromatic in either photo."""
    turn: float
    """The 95th percentile of the hue angle (degrees, on the RGB hexcone) between the
    query's pixels and the listing's graded as the query appears to be."""
    chroma_ratios: tuple[float, float]
    """The 5th and 95th percentiles of the ratio of the pixels' chroma (query / listing)."""


@dataclass(frozen=True)
class LightMap:
    """The per-channel light map fitted from the warped query to the listing
    (:func:`_light_map`), and what it leaves unexplained."""

    gains: tuple[float, float, float]
    """Per-channel (R, G, B) gains."""
    shifts: tuple[float, ...]
    """:attr:`Alignment.colour_shifts` after the map: what no change of light or white
    balance explains."""
    edge_left_out: bool = False
    """Whether the query showed another background around the product, so the band along
    the listing product's outline was left out of the comparison (``EDGE_PX``)."""
    white_unexplained: Callable[[], float] | None = field(default=None, repr=False,
                                                          compare=False)
    """Computes :attr:`Alignment.light_white_unexplained` when the rule first reads it."""


@dataclass(frozen=True)
class ShadedLight:
    """The shaded light map fitted from the warped query to the listing
    (:func:`_shaded_light_map`): per channel a tone curve (a power and a gain, fitted on
    log levels) and one smooth shading across the photo (a plane or a second-order surface in
    log light, :data:`SHADINGS`), for a photo re-shot under uneven light; and what it leaves
    unexplained."""

    neutral_spread: float
    """How far the map moves a neutral grey from neutral: the largest ratio of its channels'
    outputs for greys of 64-240 at the photo's centre (1 = no hue given to grey; a white
    balance gives ~1.1-1.25, another colour of the product more)."""
    shifts: tuple[float, ...]
    """:attr:`Alignment.colour_shifts` after the map."""
    correlation: float
    """Grey-level correlation of the mapped query with the listing (the shading divided
    out), over the pixels the light map compares."""
    white_unexplained: float
    """Share of the listing product's hull (its foreground's convex hull) where the listing
    shows white, as its background, and the mapped query a colour that is neither that
    white nor the query's own backdrop nearby (:func:`_white_unexplained`). A white garment
    on white is not foreground, so the compared pixels are the model's skin and trousers,
    which a light map explains whatever the garment's colour: there the query's lavender
    variant stays unexplained (0.10-0.19 of the hull on luma's WH05), a re-shoot of the
    white garment or of anything else does not (0.011 at most; docs/matching.md, "Shaded
    light route, kept")."""
    other_background: bool = True
    """Whether the query shows another background (not white) around the listing's product
    (:attr:`LightMap.edge_left_out`): a photo taken again, where light may be uneven. An
    edited copy on white is not re-shot, and there a white garment and its pale variant
    differ only where neither photo is foreground."""

    def shift(self, percentile: int) -> float:
        return self.shifts[SHIFT_PERCENTILES.index(percentile)]


@dataclass(frozen=True)
class Cover:
    """The largest patch of an aligned pair whose colour differs (:func:`_cover`), and how
    the photos compare without it: what a sticker, a price tag or a label laid over the
    product looks like, or a part of another colour."""

    share: float
    """Its area / the compared region's."""
    solidity: float
    """Its area / its convex hull's: ~1 for a disc, a tag, a label; a trim, a band along a
    seam or a garment's panels are not convex."""
    texture_kept: float
    """Share of its pixels where the grey-level texture is kept (a window correlation of
    ``RECOLOUR_MIN_TEXTURE_CORRELATION``, or flat in both): a part of another colour keeps
    its folds and seams, a sticker does not."""
    under_correlation: float
    """Grey-level correlation of the two photos over it (its outline left out; 0 when too
    small to say): a part of another colour keeps the shading of the listing's, a garment
    recoloured whole too, where its texture is too smooth for the windows above; a
    sticker's flat colour and print follow nothing beneath."""
    correlation: float
    """:attr:`Alignment.correlation` over the compared region without it."""
    shifts: tuple[float, ...]
    """:attr:`Alignment.colour_shifts` over the compared region without it."""
    recoloured: float
    """:attr:`Alignment.recoloured` over the compared region without it."""
    blend: Callable[[], bool] | None = field(default=None, repr=False, compare=False)
    """Computes :attr:`translucent` when the rule first reads it (~3 ms a patch, asked of
    few: a small, convex cover that keeps its texture)."""
    measured: bool = True
    """Whether :attr:`under_correlation` was measured (the patch, its outline left out,
    has ``MIN_OVERLAP_PX`` pixels or more)."""
    second: Cover | None = None
    """The next largest patch (at least ``COVER_SECOND_SHARE`` of the compared region, up to
    ``MAX_COVERS`` in all), with the photos compared without it *and every patch before it*
    (its :attr:`correlation`, :attr:`shifts` and :attr:`recoloured`): a re-listing with its
    shop's own tags, met by a query with others, differs in two places or more. None when
    there is no such patch."""

    def shift(self, percentile: int) -> float:
        return self.shifts[SHIFT_PERCENTILES.index(percentile)]

    @cached_property
    def translucent(self) -> bool:
        """Whether one photo shows the other beneath it as through a translucent overlay (a
        shop's semi-transparent logo or watermark): over the patch, one photo's RGB is the
        other's scaled by one gain for all channels (``TRANSLUCENT_GAINS``, within
        ``TRANSLUCENT_GAIN_SPREAD`` per channel) plus a constant colour, to
        ``TRANSLUCENT_MIN_FIT``, the texture seen through above ``TRANSLUCENT_MIN_TEXTURE``
        (:func:`_blend_fit`). Such a cover keeps the texture beneath, scaled down, which
        :attr:`texture_kept` and :attr:`under_correlation` read as a part of another
        colour."""
        return self.blend is not None and self.blend()


class ColourDetail:
    """The costly part of comparing two aligned photos' colours: the light map, the hue
    agreement and the recoloured patches, as given values (a rule's test) or, from
    :func:`align`, each computed from the aligned pixels when the rule first reads it
    (:class:`_ColoursOfPixels`). Most pairs are decided before the rule needs some of them:
    refused on their geometry or brightness, accepted by the plain route, refused for a
    recoloured part (on same-item-fresh and -packs the light map was read for 14-17 % of
    the keypoint alignments, the hues for 12-14 %)."""

    def __init__(self, light: LightMap | None = None, hue: HueAgreement | None = None,
                 recoloured: tuple[float, float] = (0.0, 0.0), cover: Cover | None = None,
                 shaded: tuple[ShadedLight, ...] = (), white: float = 0.0) -> None:
        self._light, self._hue, self._recoloured = light, hue, recoloured
        self._cover, self._shaded, self._white = cover, shaded, white

    def light(self) -> LightMap | None:
        """The light map (None when aligned without keypoints)."""
        return self._light

    def shaded(self) -> tuple[ShadedLight, ...]:
        """The shaded light maps, one per shading of :data:`SHADINGS` (none when aligned
        without keypoints)."""
        return self._shaded

    def hue(self) -> HueAgreement | None:
        """The hues over the whole compared region (None without enough chromatic pixels)."""
        return self._hue

    def recoloured(self) -> tuple[float, float]:
        """(:attr:`Alignment.recoloured`, :attr:`Alignment.local_recoloured`)."""
        return self._recoloured

    def cover(self) -> Cover | None:
        """:attr:`Alignment.cover`."""
        return self._cover

    def white_unexplained(self) -> float:
        """:attr:`Alignment.white_unexplained`."""
        return self._white


@dataclass(frozen=True)
class Alignment:
    """The query photo warped onto the listing's by the homography, compared where both
    show the product."""

    correlation: float
    """Normalised cross-correlation of the grey levels (brightness and contrast edits keep it
    near 1; another product under the same watermark or sale tag does not)."""
    colour_shifts: tuple[float, ...]
    """How far the aligned pixels' Lab chroma (a*, b*) moved: its ``SHIFT_PERCENTILES``."""
    inlier_cover: float = 1.0
    """Area of the inliers' convex hull / the listing's product area (1.0 when aligned
    without keypoints)."""
    brightness_ratio: float = 1.0
    """Mean grey level of the warped query / the listing's, over the compared pixels."""
    local_correlation: float | None = None
    """:attr:`correlation` over the inliers' neighbourhoods only (None without inliers)."""
    local_shifts: tuple[float, ...] | None = None
    """:attr:`colour_shifts` over the inliers' neighbourhoods only."""
    local_share: float = 1.0
    """Share of the compared pixels that lie near an inlier."""
    by_keypoints: bool = True
    """False when the photos were aligned without keypoints
    (:func:`aligned_without_keypoints`): held to the stricter ``SameItemRule.coarse_*``
    thresholds."""
    segmented: bool = False
    """Whether the photos were compared over their segmented product masks
    (:func:`product_mask`) instead of the colour-based foreground."""
    print_agreement: float | None = None
    """With ``segmented``: the ``PRINT_PERCENTILE``-th percentile of the grey-level
    correlations of the textured cells (:func:`_print_agreement`); None without such cells."""
    covered_print: Callable[[], float | None] | None = field(default=None, repr=False,
                                                            compare=False)
    """Computes :attr:`covered_print_agreement` when the rule first reads it (~0.6 ms a pair,
    asked of those whose print check fails)."""
    detail: ColourDetail = field(default_factory=ColourDetail, repr=False, compare=False)
    """The light map, the hues and the recoloured patches (read through the properties
    below; computed when first read)."""

    @cached_property
    def covered_print_agreement(self) -> float | None:
        """The print agreement again at finer cells (``PRINT_FINE_CELL_PX``) with every cell
        a cover touches left out (:func:`_print_around_covers`), when some textured cell lies
        partly under something of the query's or the listing's own colour (a sticker, a
        badge, a shop's logo); None otherwise, and without a print check."""
        return None if self.covered_print is None else self.covered_print()

    @property
    def light_gains(self) -> tuple[float, float, float] | None:
        """Per-channel gains of the light map (:class:`LightMap`; None without one)."""
        light = self.detail.light()
        return None if light is None else light.gains

    @property
    def light_shifts(self) -> tuple[float, ...] | None:
        """:attr:`colour_shifts` after the light map (None without one)."""
        light = self.detail.light()
        return None if light is None else light.shifts

    @property
    def shaded_lights(self) -> tuple[ShadedLight, ...]:
        """The shaded light maps, one per shading of :data:`SHADINGS` (none without
        keypoints)."""
        return self.detail.shaded()

    @property
    def shaded_light(self) -> ShadedLight | None:
        """The shaded light map whose grey levels correlate best (None without one)."""
        return max(self.shaded_lights, key=lambda shaded: shaded.correlation, default=None)

    @property
    def edge_left_out(self) -> bool:
        """:attr:`LightMap.edge_left_out` (False without a light map)."""
        light = self.detail.light()
        return light is not None and light.edge_left_out

    @property
    def hue(self) -> HueAgreement | None:
        """The hues over the whole compared region (:func:`_hue_agreement`; None without
        enough chromatic pixels to say)."""
        return self.detail.hue()

    @property
    def recoloured(self) -> float:
        """Share of the compared region taken by its largest patch of another colour whose
        texture is kept (:func:`_recoloured_patches`): a trim, a waistband or a garment of
        another colour on the same model in the same photo. 0 when not looked at (fewer
        than ``RECOLOUR_MIN_INLIERS`` inliers)."""
        return self.detail.recoloured()[0]

    @property
    def local_recoloured(self) -> float:
        """:attr:`recoloured` within the inliers' neighbourhoods only (the overlay route's)."""
        return self.detail.recoloured()[1]

    @property
    def cover(self) -> Cover | None:
        """The largest patch whose colour differs and the comparison without it
        (:func:`_cover`; None when no pixel differs that much, or when recoloured parts are
        not looked for)."""
        return self.detail.cover()

    @property
    def white_unexplained(self) -> float:
        """Where one photo shows white inside its product, as its background, and the other
        a colour (:func:`_white_unexplained_between`): the larger share, over the two
        photos. A white garment on white is not foreground, so the compared region leaves
        it out and what is compared is the model's skin and trousers: a purple tank top
        then agrees with the white one near the inliers, or around a sticker. A copy of the
        same item shows white where the listing does: on the 5,300 right pairs accepted on
        16 sets, 0.03 or less for 99 % of them, up to 0.21 for a watermark or a shop's
        sticker on the white, or a white garment re-shot under a warm lamp."""
        return self.detail.white_unexplained()

    @property
    def light_white_unexplained(self) -> float:
        """:attr:`white_unexplained` with the query under the light map (:class:`LightMap`):
        a white garment re-shot under a warm lamp is explained by the map, a yellow variant
        of it is not (0 without a light map)."""
        light = self.detail.light()
        if light is None or light.white_unexplained is None:
            return 0.0
        return light.white_unexplained()

    def colour_shift(self, percentile: int) -> float:
        return self.colour_shifts[SHIFT_PERCENTILES.index(percentile)]

    def light_shift(self, percentile: int) -> float:
        """:meth:`colour_shift` after the light map (infinite without one)."""
        if self.light_shifts is None:
            return float("inf")
        return self.light_shifts[SHIFT_PERCENTILES.index(percentile)]

    def local_shift(self, percentile: int) -> float:
        """:meth:`colour_shift` near the inliers (infinite without them)."""
        if self.local_shifts is None:
            return float("inf")
        return self.local_shifts[SHIFT_PERCENTILES.index(percentile)]


def _brightness_ratio(alignment: Alignment) -> float:
    """How many times brighter one aligned photo is than the other (>= 1)."""
    return max(alignment.brightness_ratio, 1 / max(alignment.brightness_ratio, 1e-6))


@dataclass(frozen=True)
class SameItemRule:
    """When two photos show the same item (see the module doc for why these).

    The defaults were chosen with bench/calibrate_same_item.py on same-item-dev and
    same-item-fmnist (precision first: >= 0.98, then the most recall); the overlay route and
    the keypoint-free route's entry cosine also on same-item-heldout, and checked on the
    re-shoot and packaging protocols (bench/protocols_reshoot.py); see docs/matching.md.

    Geometry: ``inliers >= min_inliers`` spanning ``min_inlier_cover`` of the product, mean
    brightness within ``max_brightness_ratio``, the aligned photos correlate
    (``>= min_correlation``) and their aligned colours agree (the ``shift_percentile``-th
    percentile of the chroma distance ``<= max_colour_shift``), over the whole compared region
    or, the light route, after the fitted per-channel light map (correlation
    ``>= min_light_correlation``, or ``>= min_segmented_light_correlation`` where the print
    check applies, gains within ``max_light_gain_spread``, shift ``<= max_light_shift``),
    or, the grading route, in hue (correlation ``>= min_light_correlation``, hue turned
    ``<= max_hue_turn``, chroma within ``graded_chroma``, on ``min_graded_share`` of
    chromatic pixels), or, the cover route, around one compact patch of another colour,
    texture and shading, or a small one seen through as a translucent overlay's
    (:attr:`Cover.translucent`) (``min_cover_share`` to ``max_cover`` of the product, solidity
    ``>= min_cover_solidity``, the rest correlating ``>= min_cover_correlation`` with its
    colours agreeing), or, the overlay route, near the inliers (``min_local_share`` of it,
    correlation ``>= min_local_correlation``, colour agreement ``>= min_colour``). Or,
    with fewer inliers, a plain product aligned without keypoints
    (:func:`aligned_without_keypoints`): ``similarity >= coarse_similarity``,
    ``colour_agreement >= min_colour`` and the stricter ``coarse_*`` aligned limits. Or,
    with fewer inliers and no alignment that agrees, the silhouette route
    (:meth:`decide_silhouette`): a plain listing whose product has the query's outline and
    colour. Or a near-identical photo: ``similarity >= duplicate_similarity`` and
    ``colour_agreement >= min_colour``. A pair refused with its inliers is aligned again
    (``SameItemVerifier._refined``) and accepted when the refined alignment passes
    :meth:`agrees_refined`.
    """

    min_inliers: int = 10
    min_correlation: float = 0.85
    max_colour_shift: float = 8.0
    min_colour: float = 0.80
    duplicate_similarity: float = 0.99
    shift_percentile: int = 95
    coarse_similarity: float = 0.85
    """Global cosine from which a pair with too few inliers is aligned without keypoints."""
    coarse_correlation: float = 0.97
    coarse_colour_shift: float = 6.0
    max_coarse: int = 8
    """Keypoint-free alignments tried per query photo (the most similar candidates first):
    ~8 ms each, and on a catalog of look-alikes (every pullover) most candidates qualify."""
    mirror_similarity: float = 0.65
    """Global cosine from which a refused pair is matched again with the query mirrored (a
    shop may re-list a flipped photo; SIFT does not match a mirror image). Mirrored copies of
    listings, edited as well, were 0.70-0.85 (same-item-mirrored); the alignment still
    decides, so this only bounds the work."""
    max_mirror: int = 8
    """Mirrored matches tried per query photo (the most similar refused candidates first):
    a match and, when it has the inliers, an alignment, ~5-15 ms each."""
    min_inlier_cover: float = 0.05
    """Share of the listing's product area the inliers' convex hull must span: a sale tag or
    a watermark on two listings of different products can carry all their inliers."""
    max_brightness_ratio: float = 1.6
    """Largest ratio of the aligned photos' mean grey levels: grey and black carry no chroma
    and the correlation ignores brightness, so only this tells a grey item from its black
    variant (a brightness edit stays within 0.8-1.2)."""
    min_local_share: float = 0.5
    """Share of the compared pixels that must lie near an inlier for the overlay route."""
    min_local_correlation: float = 0.9
    """Grey-level correlation near the inliers required by the overlay route."""
    max_light_shift: float = 8.0
    """The light route: colour shift after the fitted light map (:func:`_light_map`) up to
    which a pair refused only on its colour shift is accepted (re-shot photos: white
    balance and uneven light move the plain shift to 9-20). The plain route's
    ``max_colour_shift``: once the light is mapped, the colours must agree as closely as an
    edited copy's (5 until the re-shoot round; see docs/matching.md)."""
    max_light_gain_spread: float = 1.3
    """Largest ratio of the light map's channel gains (a white balance of 0.9-1.1 per
    channel and a gamma give up to ~1.25); a wider spread turns one hue into another."""
    min_print_agreement: float = 0.75
    """With segmented photos (re-shots on backdrops): the print agreement a match needs
    (:attr:`Alignment.print_agreement`). Another line of a brand on the same pack layout
    keeps the colours and the overall correlation; the cells with its name and logo do not.
    Chosen on same-item-packs (0.7 first), raised to 0.75 once the half-size photos were
    compared in their pixel centres (:data:`TO_HALF`): true re-shoots and look-alikes both
    agree better there, and look-alikes passed at 0.71-0.80 (docs/matching.md, "Pixel
    centres")."""
    max_recoloured: float = 0.01
    """Largest share of the product a patch of another colour with its texture kept may take
    (:attr:`Alignment.recoloured`; near the inliers on the overlay route): luma's colour
    variants of one style are often the same photo with one part recoloured (a trim, a
    waistband: 1-4 % of it), which the colour shift's percentiles let through (chosen on
    same-item-mirrored, -dev, -heldout and -blind; docs/matching.md, "Recoloured parts")."""
    max_overlay_recoloured: float = 0.05
    """Largest share of the product, over the whole compared region, that may be recoloured
    (:attr:`Alignment.recoloured`) for the overlay route to accept: a sticker or a banner
    changes colour *and* texture and is forgiven away from the inliers, a part of another
    colour with its print intact is not, however far from them (another flavour's band on
    one pack layout: 8-17 % of it). On the overlay route's accepts recorded on same-item-tags,
    -covers, -blind and -heldout, right listings had 0-2.5 %, the wrong ones of
    same-item-packs-copies and -covers 8.2-17.4 % (docs/matching.md, "Recoloured away from
    the inliers")."""
    min_light_correlation: float = 0.96
    """Grey-level correlation the light route requires: it forgives the colours, so the
    print must agree more closely than ``min_correlation`` asks (another line or brand on
    one pack layout keeps 0.88-0.95; chosen on same-item-packs, see docs/matching.md)."""
    min_segmented_light_correlation: float = 0.94
    """The same, for pairs compared over their segmented products with a print check
    (:attr:`Alignment.print_agreement`): that check refuses another line or brand on one
    pack layout cell by cell, so the overall correlation need not. Uneven light on a
    re-shot product lowers it to 0.89-0.96 (chosen on the re-shoot protocols: 0.92 let one
    other flavour through on same-item-packs; see docs/matching.md)."""
    min_shaded_correlation: float = 0.99
    """The shaded light route (:class:`ShadedLight`, for a pair the light route refuses):
    grey-level correlation once the shading is divided out. A re-shoot under uneven light
    then correlates 0.99-1.00; another line or brand of one pack layout keeps 0.98-0.99,
    its name and logo unexplained (chosen on same-item-reshoot and -packs, checked on
    same-item-relit and -packs-relit, lit another way; docs/matching.md, "Shaded light
    round"). Above 1: the route is closed."""
    max_shaded_white_unexplained: float = 0.05
    """The shaded light route: largest :attr:`ShadedLight.white_unexplained` (a white
    garment on white is not foreground, and the pixels compared are then the model's skin
    and trousers alone, which a light map explains whatever the garment's colour). Read on
    the pairs the route accepted: true re-shoots <= 0.011, luma's white WH05 hoodie for a
    copy of its lavender or orange variant 0.10-0.19."""
    max_white_unexplained: float = 0.12
    """The routes that forgive a part of the product (the overlay route, away from the
    inliers; the cover route, under its covers; the light route, by its map): largest
    :attr:`Alignment.white_unexplained` (:attr:`Alignment.light_white_unexplained` on the
    light route). Read on the pairs the rule accepted on 16 sets: right pairs <= 0.11 on the
    cover route (a shop's sticker on the white around the product), <= 0.08 on the overlay
    route, <= 0.15 on the light route under its map (a white jacket re-shot under a lamp,
    the one right pair this refuses); luma's WT09 tank top purple for white and back
    0.14-0.22, MH04 yellow for white under a light map 0.27 (docs/matching.md, "White
    round")."""

    max_hue_turn: float = 10.0
    """The grading route (:meth:`_agrees_graded`): largest hue angle (95th percentile,
    degrees, on the RGB hexcone) between the aligned chromatic pixels of the query and the
    listing graded as the query appears to be (:func:`_hue_agreement`). Vivid copies, up
    to x1.6 saturation and x1.3 contrast, turn it by 1-5; another colour of a style by
    tens of degrees, a luma blue against its purple variant by 57-74 (docs/matching.md,
    "Vivid re-listings")."""
    graded_chroma: tuple[float, float] = (0.6, 2.5)
    """The grading route: range of the aligned pixels' chroma ratio (5th and 95th
    percentiles). A saturation edit of 0.75-1.6 and a contrast of 1.1-1.3 stay within it;
    a white part dyed, or a colour washed out to grey, does not."""
    min_graded_share: float = 0.3
    """The grading route: share of the compared pixels that must be chromatic. A grey,
    black or white product has no hue to agree on (the brightness check tells those
    apart) and is left to the other routes."""
    max_cover_local_shift: float = 4.0
    """Within a family of look-alikes (``overlay="covers"``), where the grey levels over the
    whole agree: the colour shift near the inliers up to which the overlay route still
    forgives what differs away from them as a cover (a sticker or a tag of its own colour):
    1.4-2.4 for copies under a sticker, 7.9 for a luma colour variant whose other parts
    differ (same-item-blind)."""
    max_cover: float = 0.2
    """The cover route (:meth:`_hidden_by_covers`): the largest share of the compared
    product a sticker, a price tag or a label over it may hide (:attr:`Alignment.cover`);
    on same-item-blind a round sticker over a product's middle took 3-17 %, a luma colour
    variant's other colour 20-80 %."""
    min_cover_solidity: float = 0.85
    """The cover route: how convex the patch must be (:attr:`Cover.solidity`): a sticker, a
    tag, a label is (0.95-1.05 with its outline's pixels); another colour on a garment's
    panels, a trim or a band is not as a rule (0.65-0.93)."""
    max_cover_texture: float = 0.35
    """The cover route: largest share of the patch whose texture is kept
    (:attr:`Cover.texture_kept`): under a sticker 0.02-0.25, a recoloured part 0.45-0.97."""
    max_measured_cover_texture: float = 0.6
    """The cover route: :attr:`Cover.texture_kept`'s limit instead of ``max_cover_texture``
    where the grey levels under the patch were measured (:attr:`Cover.measured`) and do not
    follow the other photo's (``max_cover_under_correlation``). The texture test reads a
    window around each pixel, and along a small sticker's outline, over a smooth garment,
    what it reads is noise against an edge: half of it passes by chance, and a small
    sticker is mostly outline (a price flag or a round logo of 1-8 % of the product: 0.4-0.6).
    With the grey levels beneath measured too, two cues agree before the looser limit
    applies (docs/matching.md, "White round")."""
    max_cover_under_correlation: float = 0.5
    """The cover route: largest grey-level correlation of the two photos over the patch
    (:attr:`Cover.under_correlation`): under a sticker -0.54-0.39 on same-item-blind; luma's
    WB04 bra recoloured from yellow to purple, smooth enough to pass the texture windows,
    0.58."""
    max_small_cover: float = 0.10
    """The cover route: up to this share of the compared product a patch is a *small cover*
    (a shop's burst, star badge, price flag, or two tags run together), which may be less
    convex: ``min_small_cover_solidity`` instead of ``min_cover_solidity``. A colour
    variant's part that looks like a cover otherwise (no texture kept, grey levels not
    following: a bra recoloured on a model, under the query's own tag) took 11-19 % of the
    compared region on the luma sets, and other lines of a pack layout from 14 %
    (docs/matching.md, "Small and paired covers")."""
    min_small_cover_solidity: float = 0.5
    """The cover route, a small cover: how convex it must be. Star badges, bursts, price
    flags and hang tags with their hole measured 0.56-0.85 on same-item-covers."""
    min_cover_share: float = 0.01
    """The cover route: the smallest patch it forgives, as a share of the compared region;
    below it the patch is a misregistered edge, which the other routes judge."""
    min_cover_correlation: float = 0.9
    """The cover route: grey-level correlation of the rest of the product (0.92-1.00 for
    copies under a sticker on same-item-blind)."""
    min_refined_correlation: float = 0.95
    """The second look at a pair refused as RANSAC aligned it (:meth:`agrees_refined`): an
    unedited copy, turned a quarter or resampled, correlates 0.99-1.00 once its mapping is
    refined; another colour of a style, lined up on the parts the colours share, reached
    0.87 on same-item-blind, and three more passed through the light and overlay routes
    (docs/matching.md, "Refined alignment and colour grading")."""
    silhouette_route: bool = True
    """Whether the silhouette route (:meth:`decide_silhouette`) may accept a pair at all
    (``search.silhouette_route``): off for a catalog of plain look-alikes that share a shape
    and a colour, which it cannot tell apart."""
    silhouette_similarity: float = 0.82
    """The silhouette route (:meth:`decide_silhouette`; a plain product re-shot or re-edited:
    too few keypoints for geometry, too much changed for the keypoint-free alignment):
    global cosine the pair needs. Re-shot stability balls, blocks and rollers read
    0.78-0.92; the nearest look-alike that passed the other limits, a Fashion-MNIST shirt
    for another, 0.80 (docs/matching.md, "Silhouette route")."""
    silhouette_keypoints: int = 40
    """The silhouette route: most SIFT keypoints the listing may show on its product (it is
    plain: a ball, a yoga block 8-37; a printed pack, a garment on a model 60 and more)."""
    silhouette_overlap: float = 0.88
    """The silhouette route: least overlap (intersection over union) of the two products'
    outlines, each scaled to its bounding box (:attr:`SilhouetteAgreement.overlap`).
    Re-shots of one plain product 0.88-0.99; another product's 0.88 at most, on
    Fashion-MNIST's 28 px garments."""
    silhouette_chroma: float = 0.04
    """The silhouette route: largest difference of the two products' median colours in any
    channel's share of the brightness (:attr:`SilhouetteAgreement.chroma`): 0.01-0.03 for
    a luma ball re-shot under another lamp, 0.10-0.30 for its other colours."""
    silhouette_brightness: float = 1.15
    """The silhouette route: largest ratio of the two products' median brightness (grey and
    black variants have the same chroma)."""
    silhouette_saturation: float = 0.1
    """The silhouette route: least :attr:`SilhouetteAgreement.saturation` of the listing's
    product. A product without a colour (grey, black, white) leaves the outline and the
    brightness alone to tell it, and on Fashion-MNIST's grey articles a class's look-alikes
    passed every other limit (precision 0.997 -> 0.635); luma's grey ball reads 0.19-0.21,
    its blue and pink ones 0.5-0.8."""

    def decide_silhouette(self, similarity: float, silhouette: SilhouetteAgreement
                          ) -> tuple[bool, str]:
        """(same item?, why) for a pair with too few inliers, by the silhouette route: a
        plain listing (at most ``silhouette_keypoints``), globally close
        (``silhouette_similarity``), of the same outline (``silhouette_overlap``) and the
        same colour (``silhouette_chroma``, ``silhouette_brightness``), a colour at all
        (``silhouette_saturation``). What it cannot tell apart: two plain products of one
        shape and colour, which no photo tells apart either."""
        brightness = max(silhouette.brightness, 1.0 / max(silhouette.brightness, 1e-6))
        same = (similarity >= self.silhouette_similarity
                and silhouette.keypoints <= self.silhouette_keypoints
                and silhouette.overlap >= self.silhouette_overlap
                and silhouette.chroma <= self.silhouette_chroma
                and brightness <= self.silhouette_brightness
                and silhouette.saturation >= self.silhouette_saturation)
        verdict = "a plain product of the same outline and colour" if same else "plain, but"
        return same, (f"{verdict} (similarity {similarity:.3f}, {silhouette.keypoints} "
                      f"keypoints on the listing, outline overlap {silhouette.overlap:.2f}, "
                      f"colour {silhouette.chroma:.3f} apart, brightness x{brightness:.2f}, "
                      f"saturation {silhouette.saturation:.2f})")

    def decide(self, similarity: float, inliers: int, colour: float,
               alignment: Alignment | None, overlay: Overlay = "open") -> tuple[bool, str]:
        """(same item?, why) for one pair (``overlay``: when the overlay route may accept
        it, see :data:`Overlay`). A print that differs refuses the pair whatever its
        colours say, on every route; asked first, the colour detail is not computed for it
        (~90 % of the pairs verified on same-item-packs-vivid, a family of one pack
        layout)."""
        if alignment is not None and self._print_differs(alignment):
            return False, (f"{inliers} inliers, but the print differs in places (agreement "
                           f"{alignment.print_agreement:.2f} < {self.min_print_agreement})")
        return self._decide(similarity, inliers, colour, alignment, overlay)

    def _decide(self, similarity: float, inliers: int, colour: float,
                alignment: Alignment | None, overlay: Overlay) -> tuple[bool, str]:
        if alignment is not None and not alignment.by_keypoints:
            return self._decide_coarse(similarity, inliers, colour, alignment)
        if inliers >= self.min_inliers and alignment is not None:
            if alignment.inlier_cover < self.min_inlier_cover:
                return False, (f"{inliers} inliers, but on a small patch only (they span "
                               f"{alignment.inlier_cover:.0%} of the product)")
            ratio = _brightness_ratio(alignment)
            if ratio > self.max_brightness_ratio:
                return False, (f"{inliers} inliers, but one photo is {ratio:.1f}x as bright "
                               f"(another shade)")
            shift = alignment.colour_shift(self.shift_percentile)
            # A part of another colour: no route over the whole product forgives it (the
            # overlay route looks near the inliers only, where it must not be either).
            recoloured = self._part_recoloured(alignment)
            if overlay == "relit":  # two listings, the re-shot one as the query
                if not recoloured and self._agrees_under_shaded_light(alignment):
                    return True, self._under_uneven_light(inliers, shift, alignment)
                return False, (f"{inliers} inliers, but the colours differ under uneven light "
                               f"too (shift {shift:.1f})")
            if (not recoloured and alignment.correlation >= self.min_correlation
                    and shift <= self.max_colour_shift):
                return True, (f"{inliers} geometric inliers, aligned photos agree (correlation "
                              f"{alignment.correlation:.2f}, colour shift {shift:.1f})")
            if not recoloured and self._agrees_under_other_light(alignment):
                assert alignment.light_gains is not None
                mapped = alignment.light_shift(self.shift_percentile)
                gains = "/".join(f"{g:.2f}" for g in alignment.light_gains)
                band = ("; the product's outline left out (another background)"
                        if alignment.edge_left_out else "")
                return True, (f"{inliers} geometric inliers, aligned photos agree under "
                              f"another light (correlation {alignment.correlation:.2f}, colour "
                              f"shift {shift:.1f}, {mapped:.1f} after channel gains "
                              f"{gains}{band})")
            # Between two listings only for one re-shot on a backdrop, as the query ("relit").
            if (not recoloured and overlay != "closed"
                    and self._agrees_under_shaded_light(alignment)):
                return True, self._under_uneven_light(inliers, shift, alignment)
            if not recoloured and self._agrees_graded(alignment):
                assert alignment.hue is not None
                low, high = alignment.hue.chroma_ratios
                return True, (f"{inliers} geometric inliers, aligned photos agree in hue "
                              f"(correlation {alignment.correlation:.2f}, colour shift "
                              f"{shift:.1f}, hue turned {alignment.hue.turn:.0f} deg, chroma "
                              f"x{low:.2f}-{high:.2f}: a colour grading)")
            hidden = self._hidden_by_covers(alignment) if overlay != "closed" else None
            if hidden is not None:
                rest, share, n = hidden
                count = ("", "a", "two", "three", "four", "five")[n] if n <= 5 else str(n)
                under = "a sticker or a tag" if n == 1 else f"{count} stickers or tags"
                return True, (f"{inliers} geometric inliers, aligned photos agree around "
                              f"{'a cover' if n == 1 else f'{count} covers'} (correlation "
                              f"{rest.correlation:.2f}, colour shift "
                              f"{rest.shift(self.shift_percentile):.1f} without the "
                              f"{share:.0%} of the product under {under})")
            covered = overlay == "open" or (overlay == "covers" and (
                alignment.correlation < self.min_correlation or self._cover_only(alignment)))
            # A print that agrees only around covers: the rest of the product must agree
            # (the cover route), not just what lies near the inliers (a luma colour variant
            # passed so, its other colour left out as covered).
            if (covered and not self._print_below(alignment)
                    and self._agrees_near_inliers(colour, alignment)):
                assert alignment.local_correlation is not None
                return True, (f"{inliers} geometric inliers, aligned photos agree near them "
                              f"(correlation {alignment.local_correlation:.2f}, colour shift "
                              f"{alignment.local_shift(self.shift_percentile):.1f}); "
                              f"{1 - alignment.local_share:.0%} of the product covered or "
                              f"away from them")
            if recoloured:
                return False, (f"{inliers} inliers, but a part of the product has another "
                               f"colour ({alignment.recoloured:.1%} of it > "
                               f"{self.max_recoloured:.1%})")
            if alignment.correlation < self.min_correlation:
                return False, (f"{inliers} inliers, but the aligned photos differ "
                               f"(correlation {alignment.correlation:.2f})")
            return False, f"{inliers} inliers, but the colours differ (shift {shift:.1f})"
        if similarity >= self.duplicate_similarity and colour >= self.min_colour:
            return True, (f"near-identical photo (similarity {similarity:.3f}, colour "
                          f"{colour:.2f})")
        if inliers >= self.min_inliers:  # the mapping leaves too little of both to compare
            return False, (f"{inliers} inliers, but the aligned photos overlap too little to "
                           f"compare, and similarity {similarity:.3f} < "
                           f"{self.duplicate_similarity}")
        return False, (f"{inliers} geometric inliers < {self.min_inliers} and similarity "
                       f"{similarity:.3f} < {self.duplicate_similarity}")

    def agrees_refined(self, alignment: Alignment) -> bool:
        """Whether a refined alignment (:meth:`SameItemVerifier._refined`) agrees as a copy
        does: over the whole product, colour shift within ``max_colour_shift`` and grey levels
        correlating to ``min_refined_correlation``. Not by the light or the overlay route."""
        return (alignment.correlation >= self.min_refined_correlation
                and alignment.colour_shift(self.shift_percentile) <= self.max_colour_shift)

    def names_another_variant(self, alignment: Alignment | None) -> bool:
        """Whether an alignment shows what no capture or edit of one item explains: one photo
        far brighter than the other (another shade) or a print that differs in places
        (another line's name or logo). Price comparison's corroboration does not overrule
        these (``search.api._corroborate``). A part of another colour is not among them: a
        photo re-shot under another light shows one too, against the query; between the
        two listing photos the rule itself refuses it."""
        if alignment is None:
            return False
        return (_brightness_ratio(alignment) > self.max_brightness_ratio
                or self._print_differs(alignment))

    def _cover_only(self, alignment: Alignment) -> bool:
        """Within a family, where the grey levels over the whole agree: what differs is a
        cover (a sticker, a tag) only when no part is recoloured and, near the inliers, the
        colours agree as an unedited copy's (``max_cover_local_shift``)."""
        return (alignment.local_shifts is not None
                and alignment.local_shift(self.shift_percentile) <= self.max_cover_local_shift
                and not self._part_recoloured(alignment))

    def _hidden_by_covers(self, alignment: Alignment) -> tuple[Cover, float, int] | None:
        """The cover route: a sticker, a price tag or a label over the product hides one
        compact part of it (its colour, its texture and its shading differ there,
        :attr:`Alignment.cover`), and the rest agrees as a copy's (grey levels
        ``min_cover_correlation``, colour shift ``max_colour_shift``, no recoloured part).
        Another colour of a style differs over a larger share, in parts of its own shape,
        with its texture or its shading kept (docs/matching.md, "Cover route"). Up to
        ``MAX_COVERS`` covers (a re-listing's own tags and the query's, :attr:`Cover.second`),
        largest first, are left out one by one until the rest agrees, while each has a
        cover's shape and together they hide at most ``max_cover``; and no part of the
        product may be white in one photo only (``max_white_unexplained``: the region
        compared leaves a white garment out). Returns
        (the cover whose comparison of the rest holds, the share hidden, how many covers),
        or None."""
        cover = alignment.cover
        if (cover is None or not self.min_cover_share <= cover.share <= self.max_cover
                or not self._shaped_as_cover(cover)):
            return None
        share, n = cover.share, 1
        while not self._rest_agrees(cover):
            following = cover.second
            if (following is None or not self._shaped_as_cover(following)
                    or share + following.share > self.max_cover):
                return None
            cover, share, n = following, share + following.share, n + 1
        if alignment.white_unexplained > self.max_white_unexplained:
            return None
        return cover, share, n

    def _rest_agrees(self, cover: Cover) -> bool:
        """Whether the photos agree as a copy's once ``cover``'s patch (or patches) is left
        out."""
        return (cover.correlation >= self.min_cover_correlation
                and cover.shift(self.shift_percentile) <= self.max_colour_shift
                and cover.recoloured <= self.max_recoloured)

    def _shaped_as_cover(self, cover: Cover) -> bool:
        """Whether the patch has a cover's shape and texture: convex (a small cover,
        ``max_small_cover``, less so), its texture lost and its grey levels not following
        the other photo's, or, a small cover, a translucent overlay's blend of the texture
        beneath (:attr:`Cover.translucent`: a shop's semi-transparent logo keeps the
        texture, scaled down by one gain for every channel)."""
        small = cover.share <= self.max_small_cover
        convex = self.min_small_cover_solidity if small else self.min_cover_solidity
        if cover.solidity < convex:
            return False
        texture = (self.max_measured_cover_texture if cover.measured
                   else self.max_cover_texture)
        if (cover.texture_kept <= texture
                and cover.under_correlation <= self.max_cover_under_correlation):
            return True
        return small and cover.translucent  # the texture beneath shows through, scaled down

    def _part_recoloured(self, alignment: Alignment) -> bool:
        return alignment.recoloured > self.max_recoloured

    def _print_differs(self, alignment: Alignment) -> bool:
        """Whether the print check refuses the pair: below ``min_print_agreement`` at its
        cells, and at the second look around covers too, where it had one
        (:attr:`Alignment.covered_print_agreement`)."""
        if not self._print_below(alignment):
            return False
        covered = alignment.covered_print_agreement
        return covered is None or covered < self.min_print_agreement

    def _print_below(self, alignment: Alignment) -> bool:
        return (alignment.print_agreement is not None
                and alignment.print_agreement < self.min_print_agreement)

    def _agrees_under_other_light(self, alignment: Alignment) -> bool:
        """The light route: a re-shot photo (another camera, white balance, lamp) differs
        from the listing by one per-channel map over the whole product; another colour or
        flavour differs in one part (a band, a trim, a logo) that such a map, fitted to
        the rest, leaves unexplained, or needs channel gains far apart (a hue turned), or
        shows a colour where the other photo shows a white garment that the region compared
        leaves out (``max_white_unexplained``, under the map)."""
        checked = alignment.segmented and alignment.print_agreement is not None
        floor = self.min_segmented_light_correlation if checked else self.min_light_correlation
        if alignment.correlation < floor:  # asked first: the light map is fitted when read
            return False
        gains = alignment.light_gains
        if gains is None or min(gains) <= 0:
            return False
        return (max(gains) / min(gains) <= self.max_light_gain_spread
                and alignment.light_shift(self.shift_percentile) <= self.max_light_shift
                and alignment.light_white_unexplained <= self.max_white_unexplained)

    def only_colours_differ(self, inliers: int, alignment: Alignment | None) -> bool:
        """Whether a pair's keypoints, brightness, grey levels and print agree and no part of
        it is recoloured, so that only its colours differ: what another light explains.
        Price comparison then asks two listings, one re-shot on a backdrop and the other
        not, of the shaded light route with the re-shot one as the query
        (``overlay="relit"``; ``search.api._compare_listings``)."""
        return (alignment is not None and alignment.by_keypoints
                and inliers >= self.min_inliers
                and alignment.inlier_cover >= self.min_inlier_cover
                and _brightness_ratio(alignment) <= self.max_brightness_ratio
                and not self._print_differs(alignment)
                and alignment.correlation >= self.min_correlation
                and not self._part_recoloured(alignment))

    def _under_uneven_light(self, inliers: int, shift: float, alignment: Alignment) -> str:
        """The shaded light route's reason for a pair it accepted."""
        shaded = self._shaded_light_explaining(alignment)
        assert shaded is not None
        after = shaded.shift(self.shift_percentile)
        return (f"{inliers} geometric inliers, aligned photos agree under uneven light "
                f"(correlation {alignment.correlation:.2f}, {shaded.correlation:.3f} with the "
                f"shading divided out; colour shift {shift:.1f}, {after:.1f} after a shaded "
                f"light map)")

    def _agrees_under_shaded_light(self, alignment: Alignment) -> bool:
        """The shaded light route: a photo re-shot under uneven light (a lamp's fall-off
        across the product, a tone curve) is one smooth map from the listing's, which a
        per-channel map alone leaves unexplained and whose shading lowers the grey-level
        correlation. Asked of a pair the light route refused: with the shading divided out
        (:func:`_shaded_light_map`, by either map of :data:`SHADINGS`), the grey levels
        must correlate to ``min_shaded_correlation``, a neutral grey stay within
        ``max_light_gain_spread``, the colours agree within ``max_light_shift``, and where
        the listing shows white inside its product the query must show white or its own
        backdrop (``max_shaded_white_unexplained``); and the query must show another
        background around the product (:attr:`ShadedLight.other_background`: re-shot)."""
        if (self.min_shaded_correlation > 1
                or alignment.correlation < self.min_correlation):  # before the map is fitted
            return False
        return self._shaded_light_explaining(alignment) is not None

    def _shaded_light_explaining(self, alignment: Alignment) -> ShadedLight | None:
        """The first of the pair's shaded light maps (:data:`SHADINGS`) within every limit
        of the shaded light route, or None."""
        return next((shaded for shaded in alignment.shaded_lights
                     if shaded.other_background
                     and shaded.white_unexplained <= self.max_shaded_white_unexplained
                     and shaded.correlation >= self.min_shaded_correlation
                     and shaded.neutral_spread <= self.max_light_gain_spread
                     and shaded.shift(self.shift_percentile) <= self.max_light_shift), None)

    def _agrees_graded(self, alignment: Alignment) -> bool:
        """The grading route: a shop's saturation, vibrance or contrast edit moves every
        colour's chroma (by more than one gain explains where a channel clips) and turns no
        hue. Over the product's chromatic pixels (at least ``min_graded_share`` of it) the
        hue must agree within ``max_hue_turn`` and the chroma change stay within
        ``graded_chroma``, with the grey levels correlating as the light route asks."""
        if alignment.correlation < self.min_light_correlation:  # before the hues are read
            return False
        hue = alignment.hue
        if hue is None:
            return False
        low, high = hue.chroma_ratios
        return (hue.chromatic_share >= self.min_graded_share
                and hue.turn <= self.max_hue_turn
                and self.graded_chroma[0] <= low and high <= self.graded_chroma[1])

    def _agrees_near_inliers(self, colour: float, alignment: Alignment) -> bool:
        """The overlay route: a banner, a sticker or a price label over the product hides
        part of it, and no inlier lies under it. Where the inliers are, both photos
        demonstrably show the same surface: there the grey levels must correlate and the
        colours agree as strictly as over the whole, on at least ``min_local_share`` of the
        compared pixels, with the photos' colour histograms in agreement. A recoloured
        variant keeps its inliers (SIFT sees grey levels) and so its colour change in view,
        and a part of another colour must not lie near them either
        (:attr:`Alignment.local_recoloured`): a cover away from the inliers is forgiven, a
        trim beside them is not, nor a large recoloured part anywhere
        (``max_overlay_recoloured``), nor a garment white in one photo only
        (``max_white_unexplained``)."""
        if alignment.local_correlation is None or alignment.local_shifts is None:
            return False
        return (alignment.local_share >= self.min_local_share
                and alignment.local_correlation >= self.min_local_correlation
                and alignment.local_shift(self.shift_percentile) <= self.max_colour_shift
                and alignment.local_recoloured <= self.max_recoloured
                and alignment.recoloured <= self.max_overlay_recoloured
                and colour >= self.min_colour
                and alignment.white_unexplained <= self.max_white_unexplained)

    def wants_coarse(self, similarity: float, inliers: int, colour: float) -> bool:
        """Whether a pair is worth aligning without keypoints: too few inliers for geometry,
        yet globally close and of agreeing colours (a plain, textureless product)."""
        return (inliers < self.min_inliers and similarity >= self.coarse_similarity
                and colour >= self.min_colour)

    def _decide_coarse(self, similarity: float, inliers: int, colour: float,
                       alignment: Alignment) -> tuple[bool, str]:
        if similarity >= self.duplicate_similarity and colour >= self.min_colour:
            return True, (f"near-identical photo (similarity {similarity:.3f}, colour "
                          f"{colour:.2f})")
        shift = alignment.colour_shift(self.shift_percentile)
        if (similarity >= self.coarse_similarity and colour >= self.min_colour
                and alignment.correlation >= self.coarse_correlation
                and shift <= self.coarse_colour_shift and not self._part_recoloured(alignment)):
            return True, (f"{inliers} inliers, aligned without keypoints and the photos agree "
                          f"(correlation {alignment.correlation:.2f}, colour shift {shift:.1f})")
        return False, (f"{inliers} inliers; aligned without keypoints, the photos differ "
                       f"(correlation {alignment.correlation:.2f}, colour shift {shift:.1f}, "
                       f"recoloured part {alignment.recoloured:.1%})")


@dataclass(frozen=True)
class Evidence:
    """Why a candidate listing is, or is not, the query's item."""

    same_item: bool
    similarity: float
    inliers: int
    colour_agreement: float
    alignment: Alignment | None
    reason: str
    colour_shift: float | None = None
    """The alignment's colour shift at the rule's percentile (None without alignment)."""
    coarse_tried: bool = False
    """Whether a keypoint-free alignment was tried (budgeted per query photo)."""
    mirror_tried: bool = False
    """Whether the query was matched mirrored (budgeted per query photo)."""
    via: str | None = None
    """The product id of the accepted listing this one was compared with, instead of the
    query (``search.api._corroborate``)."""


def align(a: PhotoFeatures, b: PhotoFeatures, homography: NDArray[np.float64],
          inliers: NDArray[np.float32] | None = None, print_check: bool = False
          ) -> Alignment | None:
    """Warp ``a`` onto ``b`` and compare them where both show the product (None when the
    overlap is too small to say). The print agreement is measured for segmented photos, and
    for any pair with ``print_check``."""
    h_small = in_half_px(homography)
    height, width = b.small.shape[:2]
    warped = np.asarray(cv2.warpPerspective(
        a.small, h_small, (width, height), flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT, borderValue=(255, 255, 255)), dtype=np.uint8)
    valid = cv2.warpPerspective(np.ones(a.small.shape[:2], np.uint8), h_small,
                                (width, height), flags=cv2.INTER_NEAREST) > 0
    # Where BOTH show something other than background: a sale tag, a watermark on the white
    # or a coloured pad in one photo is left out, the product itself stays in.
    fg_b, fg_a, segmented = _foregrounds(a, b, warped, valid, h_small)
    listing = _at_resolution_of(b.small, h_small)
    region = valid & fg_a & fg_b
    if int(region.sum()) < MIN_OVERLAP_PX:
        return None
    cover = 1.0
    if inliers is not None:  # hull in VERIFY_SIZE px; the product area at half that
        hull = float(cv2.contourArea(cv2.convexHull(inliers))) if len(inliers) >= 3 else 0.0
        cover = hull / 4.0 / max(1, int(fg_b.sum()))
    grey_a = cv2.cvtColor(warped, cv2.COLOR_RGB2GRAY)
    grey_b = cv2.cvtColor(listing, cv2.COLOR_RGB2GRAY)
    region_a = grey_a[region].astype(np.float64)
    region_b = grey_b[region].astype(np.float64)
    brightness = (float(region_a.mean()) + 1.0) / (float(region_b.mean()) + 1.0)
    correlation = _correlation(region_a, region_b)
    # Colours compared a little blurred: a pixel or two of misregistration and re-encoding's
    # smeared chroma at edges are not a colour change.
    soft_a, soft_b = (np.asarray(cv2.GaussianBlur(x, (0, 0), COLOUR_BLUR_PX), dtype=np.uint8)
                      for x in (warped, listing))
    chroma_a, chroma_b = _lab_chroma(soft_a[region]), _lab_chroma(soft_b[region])
    shifts = _chroma_shifts(chroma_a, chroma_b)
    local_corr, local_shifts, share = None, None, 1.0
    near: NDArray[np.uint8] | None = None
    if inliers is not None and len(inliers):
        near = np.zeros(region.shape, np.uint8)
        for x, y in (inliers - 0.5) / 2:  # as TO_HALF maps them
            cv2.circle(near, (round(float(x)), round(float(y))), NEAR_INLIER_PX, 1, -1)
        local = (near > 0)[region]  # of the compared pixels, those near an inlier
        share = float(local.mean())
        if int(local.sum()) >= MIN_OVERLAP_PX:
            local_corr = _correlation(region_a[local], region_b[local])
            local_shifts = _chroma_shifts(chroma_a[local], chroma_b[local])
    pixels = _AlignedPixels(warped, listing, valid, region, fg_b, fg_a, soft_a, soft_b, grey_a,
                            grey_b, near)
    agreement, second_look = None, None
    if segmented or print_check:
        foreign = _foreign(chroma_a, chroma_b, region)
        coarse = _print_cells(grey_a, grey_b, region, PRINT_CELL_PX, foreign)
        agreement = _print_agreement(coarse)
        if coarse is not None:
            cells = coarse

            def second_look() -> float | None:  # read when the print check fails
                return _print_around_covers(grey_a, grey_b, region, foreign, cells)
    return Alignment(correlation, shifts, cover, brightness, local_corr, local_shifts, share,
                     segmented=segmented,
                     print_agreement=agreement, covered_print=second_look,
                     detail=_ColoursOfPixels(
                         pixels, light=inliers is not None,
                         recolour=inliers is None or len(inliers) >= RECOLOUR_MIN_INLIERS))


@dataclass(frozen=True)
class _AlignedPixels:
    """What :func:`align` compared, kept for the parts of :class:`ColourDetail` computed when
    first read: the warped query (``warped``, ``valid`` where it lands) and the listing at
    its detail, their compared ``region`` and the two foregrounds ``fg_b``, ``fg_a``, both
    blurred (``soft_*``) and in grey, and the inliers' neighbourhoods (None without
    inliers)."""

    warped: NDArray[np.uint8]
    listing: NDArray[np.uint8]
    valid: NDArray[np.bool_]
    region: NDArray[np.bool_]
    fg_b: NDArray[np.bool_]
    fg_a: NDArray[np.bool_]
    soft_a: NDArray[np.uint8]
    soft_b: NDArray[np.uint8]
    grey_a: NDArray[Any]
    grey_b: NDArray[Any]
    near: NDArray[np.uint8] | None


class _ColoursOfPixels(ColourDetail):
    """:class:`ColourDetail` computed from aligned pixels, each part once, when first read
    (two threads reading one part at once compute it twice, to the same value). ``light``:
    whether the light map is fitted (with inliers: the light route's); ``recolour``: whether
    recoloured patches are looked for (``RECOLOUR_MIN_INLIERS``). The pixels are kept as long
    as the alignment (~0.3 MB for a 160 px pair, measured on same-item-packs): a query's
    evidence, dropped when its comparison returns."""

    def __init__(self, pixels: _AlignedPixels, light: bool, recolour: bool) -> None:
        super().__init__()
        self._pixels, self._fit_light, self._recolour = pixels, light, recolour
        self._done: set[str] = set()
        self._patches: tuple[NDArray[Any] | None, int] = (None, 0)
        self._texture: NDArray[np.bool_] | None = None
        self._relit: tuple[NDArray[np.bool_], bool] | None = None

    def _colour_region(self) -> tuple[NDArray[np.bool_], bool]:
        """:func:`_colour_region` of the aligned photos, computed once for the light map and
        the shaded one."""
        if self._relit is None:
            p = self._pixels
            self._relit = _colour_region(p.region, p.valid, p.warped, p.fg_b)
        return self._relit

    def _kept(self) -> NDArray[np.bool_]:
        """:func:`_texture_kept` of the aligned photos, computed once for the recoloured
        patches and the cover."""
        if self._texture is None:
            self._texture = _texture_kept(self._pixels.grey_a, self._pixels.grey_b)
        return self._texture

    def light(self) -> LightMap | None:
        if "light" not in self._done:
            if self._fit_light:
                p = self._pixels
                relit, edge_left_out = self._colour_region()
                fit = _light_fit(p.soft_a[relit], p.soft_b[relit])
                mapped = _mapped(fit, p.soft_a[relit])

                def white() -> float:  # read when the light route would accept
                    return _white_unexplained_between(p, fit)
                self._light = LightMap(_gains(fit), _colour_shifts(mapped, p.soft_b[relit]),
                                       edge_left_out, white)
            self._done.add("light")
        return self._light

    def shaded(self) -> tuple[ShadedLight, ...]:
        if "shaded" not in self._done:
            if self._fit_light:
                p = self._pixels
                relit, other_background = self._colour_region()
                where, listing = _positions(relit), p.soft_b[relit]
                fits = [_shaded_light_map(p.soft_a[relit], listing, where, terms)
                        for terms in SHADINGS]
                self._shaded = tuple(
                    ShadedLight(spread, _colour_shifts(mapped, listing),
                                _correlation(_grey_levels(mapped), _grey_levels(listing)),
                                _white_unexplained(p, coef), other_background)
                    for spread, mapped, coef in fits)
            self._done.add("shaded")
        return self._shaded

    def hue(self) -> HueAgreement | None:
        if "hue" not in self._done:
            p = self._pixels  # ~3-7 ms: a grading fitted, replayed on the listing, compared
            self._hue = _graded_hue(p.warped, p.listing, p.soft_a, p.soft_b, p.region)
            self._done.add("hue")
        return self._hue

    def recoloured(self) -> tuple[float, float]:
        if "recoloured" not in self._done:
            if self._recolour:
                p = self._pixels
                patches, compared = _recoloured_patches(p.soft_a, p.soft_b, p.region,
                                                        self._kept)
                self._patches = (patches, compared)
                whole = _largest_share(patches, compared)
                near = (whole if patches is None or p.near is None
                        else _largest_share(patches & p.near, compared))
                self._recoloured = (whole, near)
            self._done.add("recoloured")
        return self._recoloured

    def cover(self) -> Cover | None:
        if "cover" not in self._done:
            if self._recolour:
                self.recoloured()
                self._cover = _cover(self._pixels, *self._patches, self._kept())
            self._done.add("cover")
        return self._cover

    def white_unexplained(self) -> float:
        if "white" not in self._done:
            self._white = _white_unexplained_between(self._pixels)
            self._done.add("white")
        return self._white


def _foregrounds(a: PhotoFeatures, b: PhotoFeatures, warped: NDArray[np.uint8],
                 valid: NDArray[np.bool_], h_small: NDArray[np.float64]
                 ) -> tuple[NDArray[np.bool_], NDArray[np.bool_], bool]:
    """(listing foreground, warped query foreground, segmented?). The colour-based
    foregrounds, unless a photo has a segmented product mask (:func:`product_mask`) and the
    two, aligned, outline the same product (intersection over union >=
    ``SEGMENT_MIN_IOU``: GrabCut can keep one panel of a pack only)."""
    fg_b, fg_a = foreground_weights(b.small) > 0.5, foreground_weights(warped) > 0.5
    if a.product is None and b.product is None:
        return fg_b, fg_a, False
    seg_b = b.product if b.product is not None else fg_b
    seg_a = fg_a
    if a.product is not None:
        height, width = b.small.shape[:2]
        seg_a = cv2.warpPerspective(a.product.astype(np.uint8), h_small, (width, height),
                                    flags=cv2.INTER_NEAREST) > 0
    both, either = int((seg_a & seg_b & valid).sum()), int(((seg_a | seg_b) & valid).sum())
    if either == 0 or both < MIN_OVERLAP_PX or both / either < SEGMENT_MIN_IOU:
        return fg_b, fg_a, False
    return seg_b, seg_a, True


def _foreign(ab_a: NDArray[np.float64], ab_b: NDArray[np.float64],
             region: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """Where, of ``region``, the query's colour is far from the listing's (``FOREIGN_SHIFT``
    in Lab chroma): a sticker, a tag or a label of its own colour laid over the product."""
    out = np.zeros(region.shape, bool)
    d = ab_a - ab_b
    out[region] = d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1] > FOREIGN_SHIFT * FOREIGN_SHIFT
    return out


PrintCells = tuple[NDArray[np.float64], NDArray[np.bool_], NDArray[np.float64]]
"""The print check's cells (:func:`_print_cells`): per cell, its correlation, whether it
counts, its share under a cover."""


def _print_cells(grey_a: NDArray[Any], grey_b: NDArray[Any], region: NDArray[np.bool_],
                 step: int, foreign: NDArray[np.bool_] | None = None) -> PrintCells | None:
    """The print check's cells of side ``step``: (the grey-level correlation of the aligned
    photos in each, which cells count: the compared region covers ``PRINT_CELL_COVER`` of it
    and the listing shows something there (``PRINT_MIN_STD``: text, a logo, an edge), the
    share of each under ``foreign``), or None without a cell."""
    rows, cols = region.shape[0] // step, region.shape[1] // step
    if rows == 0 or cols == 0:
        return None

    def cells(x: NDArray[Any]) -> NDArray[np.float64]:  # (rows, cols, step * step)
        blocks = x[: rows * step, : cols * step].astype(np.float64)
        out: NDArray[np.float64] = blocks.reshape(rows, step, cols, step).swapaxes(1, 2) \
            .reshape(rows, cols, step * step)
        return out

    weight, a, b = cells(region), cells(grey_a), cells(grey_b)
    n = weight.sum(axis=2)
    counted = n >= PRINT_CELL_COVER * step * step
    n = np.maximum(n, 1.0)
    mean_a, mean_b = (a * weight).sum(axis=2) / n, (b * weight).sum(axis=2) / n
    da, db = (a - mean_a[..., None]) * weight, (b - mean_b[..., None]) * weight
    var_a, var_b = (da * da).sum(axis=2), (db * db).sum(axis=2)
    counted &= var_b / n >= PRINT_MIN_STD**2
    denominator = np.sqrt(var_a * var_b)
    correlation = np.where(denominator > 0, (da * db).sum(axis=2) / np.maximum(denominator, 1e-12),
                           0.0)
    under = (cells(foreign).sum(axis=2) / n if foreign is not None
             else np.zeros(correlation.shape))
    return correlation, counted, under


def _print_agreement(cells: PrintCells | None) -> float | None:
    """The ``PRINT_PERCENTILE``-th percentile of the grey-level correlations of the aligned
    photos over the counted ``PRINT_CELL_PX`` cells (:func:`_print_cells`: those the compared
    region covers and where the listing shows something: text, a logo, an edge): low when
    some of them differ, as a product name or a logo does between two lines of a brand on
    one pack layout. None without such cells. The cells mostly under a cover
    (:func:`_foreign`, when the cells measured it) are left out, while they are at most
    ``MAX_FOREIGN_CELLS`` of those counted."""
    if cells is None or not cells[1].any():
        return None
    correlation, counted, under = cells
    # Cells mostly under a colour of the query's own (a cover) say nothing about the
    # print beneath; left out while they are a minority of the counted cells.
    covered = counted & (under > 0.5)
    if 0 < covered.sum() <= MAX_FOREIGN_CELLS * counted.sum():
        counted = counted & ~covered  # a new array: the cells are read again
    return float(np.percentile(correlation[counted], PRINT_PERCENTILE))


def _print_around_covers(grey_a: NDArray[Any], grey_b: NDArray[Any], region: NDArray[np.bool_],
                         foreign: NDArray[np.bool_], coarse: PrintCells) -> float | None:
    """The print check's second look, for a pair where something of another colour lies
    over the print (:func:`_foreign`: a sticker, a badge, a shop's logo in one photo or
    both): the ``PRINT_PERCENTILE``-th percentile of the correlations over
    ``PRINT_FINE_CELL_PX`` cells, every cell ``PRINT_COVERED_SHARE`` under a cover left out,
    while those are at most ``MAX_FOREIGN_CELLS`` of the counted cells. At
    :func:`_print_agreement`'s cells a badge's rim in a corner lowers a cell it does not
    cover, and a shop's copy under three badges failed the check (0.2-0.7); at these a cell
    holds a few letters, and another line's name fails there too (0.5 where the coarse
    cells read 0.78). None when no counted cell of ``coarse`` (:func:`_print_agreement`'s
    cells) lies under a cover, or too many fine cells do."""
    if not (coarse[1] & (coarse[2] >= PRINT_COVERED_SHARE)).any():
        return None
    fine = _print_cells(grey_a, grey_b, region, PRINT_FINE_CELL_PX, foreign)
    if fine is None:
        return None
    correlation, counted, under = fine
    covered = counted & (under >= PRINT_COVERED_SHARE)
    if not 0 < covered.sum() <= MAX_FOREIGN_CELLS * counted.sum():
        return None
    return float(np.percentile(correlation[counted & ~covered], PRINT_PERCENTILE))


def _at_resolution_of(listing: NDArray[np.uint8], homography: NDArray[np.float64]
                      ) -> NDArray[np.uint8]:
    """The listing photo brought down to the detail of a smaller query warped onto it by
    ``homography`` (query px -> listing px): shrunk by the mapping's scale and enlarged
    back, the path the query's own pixels took. A 200 px re-listing enlarged onto a 320 px
    listing is soft at every edge, and compared with the sharp listing that softness reads
    as a colour shift of 8-10 along every outline on white; at matched detail it does not.
    A query as large as the listing or larger is compared as it is."""
    scale = float(np.sqrt(abs(np.linalg.det(homography[:2, :2]))))  # linear enlargement
    if scale < MATCH_DETAIL_SCALE:
        return listing
    height, width = listing.shape[:2]
    down = cv2.resize(listing, (max(1, round(width / scale)), max(1, round(height / scale))),
                      interpolation=cv2.INTER_AREA)
    return np.asarray(cv2.resize(down, (width, height), interpolation=cv2.INTER_LINEAR),
                      dtype=np.uint8)


def _recoloured_patches(soft_a: NDArray[np.uint8], soft_b: NDArray[np.uint8],
                        region: NDArray[np.bool_], kept: Callable[[], NDArray[np.bool_]]
                        ) -> tuple[NDArray[Any] | None, int]:
    """(the patches of the compared ``region`` whose colour changed while their texture
    stayed, the number of pixels compared; None for no patch): what another colour of one
    part of a product looks like (a waistband, a trim, black shorts made grey on the same
    model in the same pose), and what no edit of the whole photo does. The percentiles of
    the colour shift dilute such a part in the rest of the photo (a pink trim is 1-3 % of a
    model's photo).

    A pixel changed colour when it did both as the photos are and after the per-channel
    light map (:func:`_light_map`: a white balance or a warm filter turns hues, and a map
    fitted to a yellow jacket turns grey trousers blue; each explains what the other cannot)
    by :func:`_colour_changed`: lightness (after one lightness map: a brightness, contrast or
    tone edit) and hue apart, or chroma multiplied (white dyed, a colour washed to grey).
    Saturation and vividness edits scale chroma and keep hue, so they do not count. It
    counts only where the grey-level texture is kept (a window correlation of
    ``RECOLOUR_MIN_TEXTURE_CORRELATION``, or flat in both: ``kept``, the photos'
    :func:`_texture_kept`, asked only when some colour changed): a sticker or a banner
    over the product changes colour *and* texture, and is left to the rule's overlay and
    cover checks. ~2-7 ms a pair, the least when nothing changed colour as the photos
    are."""
    inner = cv2.erode(region.astype(np.uint8), np.ones((3, 3), np.uint8),
                      iterations=RECOLOUR_INSET_PX) > 0
    n = int(inner.sum())
    if n < MIN_OVERLAP_PX:
        return None, 0
    pixels_a, pixels_b = soft_a[inner], soft_b[inner]
    lab_b = _lab(pixels_b)
    as_they_are = _colour_changed(_lab(pixels_a), lab_b)
    if not as_they_are.any():  # most pairs of one item: the light map is not needed
        return None, n
    _, mapped = _light_map(pixels_a, pixels_b)
    changed = np.zeros(inner.shape, dtype=bool)
    changed[inner] = _colour_changed(_lab(mapped), lab_b, among=as_they_are)
    changed &= ~_in_glare(changed, inner, soft_a, soft_b)  # a glare is not another colour
    if not changed.any():
        return None, n
    patches = cv2.morphologyEx((changed & kept()).astype(np.uint8), cv2.MORPH_OPEN,
                               np.ones((3, 3), np.uint8))
    return patches, n


def _whitening(a: NDArray[np.uint8], b: NDArray[np.uint8]
               ) -> tuple[NDArray[np.bool_], NDArray[np.float32]]:
    """Per pixel pair (query ``a``, listing ``b``, (n, 3)): (whether ``a`` is ``b`` blended
    towards white, the share of its way to white it moved, averaged over the channels). Blended
    towards white: moved the same share of the way in every channel (``(a - b) / (255 - b)``
    within ``WHITEN_MAX_SPREAD`` of each other, each at least ``WHITEN_MIN_ALPHA``): what a
    glare does, and what another hue of a part does not. Channels within 12 of white count
    their share out of 12, so that JPEG noise there is no large share."""
    fa, fb = a.astype(np.float32), b.astype(np.float32)
    r, g, bl = ((fa[:, c] - fb[:, c]) / np.maximum(255.0 - fb[:, c], 12.0) for c in range(3))
    low, high = np.minimum(np.minimum(r, g), bl), np.maximum(np.maximum(r, g), bl)
    whitened = (low >= WHITEN_MIN_ALPHA) & (high - low <= WHITEN_MAX_SPREAD)
    out: NDArray[np.float32] = (r + g + bl) / 3
    return whitened, out


def _in_glare(changed: NDArray[np.bool_], inner: NDArray[np.bool_], soft_a: NDArray[np.uint8],
              soft_b: NDArray[np.uint8]) -> NDArray[np.bool_]:
    """The ``changed`` pixels (of the compared ``inner`` region of the blurred query and
    listing, ``soft_*``) that a glare explains: each patch of them blended towards white
    (:func:`_whitening`) whose whitening fades out past its edge. Just outside the patch
    (``GLARE_BAND_PX``) the query is still whitened by at least ``GLARE_EDGE_RATIO`` of what
    it is just inside, and just inside by at most ``GLARE_MAX_EDGE``: a lamp's soft glare
    has no edge of its own, while a paler part of the product (pink for red, light grey for
    grey) ends where the part ends, and a part nearly white at its edge is a white part. A
    sharp specular highlight has an edge too, and stays a part of another colour
    (docs/matching.md, "Glare round"). ~0.5 ms a pair with changed pixels."""
    band = np.ones((3, 3), np.uint8)
    near = (cv2.dilate(changed.astype(np.uint8), band, iterations=GLARE_BAND_PX) > 0) & inner
    whitened, alpha = _whitening(soft_a[near], soft_b[near])
    white_map = np.zeros(inner.shape, dtype=bool)
    white_map[near] = whitened
    alpha_map = np.zeros(inner.shape, dtype=np.float32)
    alpha_map[near] = alpha
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        (changed & white_map).astype(np.uint8), connectivity=8)
    out = np.zeros(inner.shape, dtype=bool)
    height, width = inner.shape
    pad = GLARE_BAND_PX + 1
    for label in range(1, count):
        x, y, w, h = (int(v) for v in stats[label, :4])
        window = (slice(max(0, y - pad), min(height, y + h + pad)),
                  slice(max(0, x - pad), min(width, x + w + pad)))
        patch = labels[window] == label
        inside = patch & ~(cv2.erode(patch.astype(np.uint8), band,
                                     iterations=GLARE_BAND_PX) > 0)
        outside = ((cv2.dilate(patch.astype(np.uint8), band, iterations=GLARE_BAND_PX) > 0)
                   & ~patch & inner[window])
        if inside.sum() < 4 or outside.sum() < 4:
            continue
        alphas = alpha_map[window]
        edge = float(np.median(alphas[inside]))
        if (0 < edge <= GLARE_MAX_EDGE
                and float(np.median(alphas[outside])) >= GLARE_EDGE_RATIO * edge):
            out[window] |= patch
    return out


def _texture_kept(grey_a: NDArray[Any], grey_b: NDArray[Any]) -> NDArray[np.bool_]:
    """Per pixel, whether the two aligned photos' grey-level texture agrees there: a window
    correlation (``RECOLOUR_WINDOW_PX``) of ``RECOLOUR_MIN_TEXTURE_CORRELATION``, or flat in
    both (``RECOLOUR_FLAT_STD``)."""
    texture, spread_a, spread_b = _window_correlation(grey_a, grey_b, RECOLOUR_WINDOW_PX)
    kept: NDArray[np.bool_] = (texture >= RECOLOUR_MIN_TEXTURE_CORRELATION) | (
        (spread_a < RECOLOUR_FLAT_STD) & (spread_b < RECOLOUR_FLAT_STD))
    return kept


def _cover(p: _AlignedPixels, patches: NDArray[Any] | None, compared: int,
           kept: NDArray[np.bool_]) -> Cover | None:
    """The largest patch of the compared region whose colour differs by ``COVER_DELTA``
    (closed over ``COVER_CLOSE_PX``: a sticker's text), its shape and texture, and the two
    photos compared without it and its ``COVER_MARGIN_PX`` margin (grey-level correlation,
    colour shifts, and the largest recoloured patch of ``patches`` left, as a share of
    ``compared``; see :func:`_recoloured_patches`; ``kept``: its :func:`_texture_kept`),
    and, as :attr:`Cover.second`, the next largest patch, compared without both, and so on
    up to ``MAX_COVERS`` patches. None when no pixel differs that much or nothing is left to
    compare. The grey-level correlation over a patch (:attr:`Cover.under_correlation`) is
    taken without its outline (2 px eroded). ~2-4 ms a pair, ~1-2 ms more for each further
    patch."""
    region = p.region
    distance = np.linalg.norm(_lab(p.soft_a[region]) - _lab(p.soft_b[region]), axis=1)
    differs = np.zeros(region.shape, np.uint8)
    differs[region] = distance > COVER_DELTA
    if not differs.any():
        return None
    closed = np.asarray(cv2.morphologyEx(differs, cv2.MORPH_CLOSE,
                                         np.ones((COVER_CLOSE_PX, COVER_CLOSE_PX), np.uint8)),
                        np.uint8) & region.astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(closed, connectivity=8)
    if count < 2:
        return None
    order = 1 + np.argsort(-stats[1:, cv2.CC_STAT_AREA], kind="stable")  # largest first
    smallest = COVER_SECOND_SHARE * int(region.sum())
    chain: list[Cover] = []
    hidden = np.zeros(region.shape, bool)
    for n, label in enumerate(order[:MAX_COVERS]):
        if n and stats[label, cv2.CC_STAT_AREA] < smallest:
            break
        patch = labels == label
        hidden |= patch
        found = _cover_around(p, patch, hidden, patches, compared, kept)
        if found is None:
            break
        chain.append(found)
    linked = None
    for found in reversed(chain):  # each patch's Cover.second: the next one
        linked = replace(found, second=linked)
    return linked


def _cover_around(p: _AlignedPixels, patch: NDArray[np.bool_], hidden: NDArray[np.bool_],
                  patches: NDArray[Any] | None, compared: int,
                  kept: NDArray[np.bool_]) -> Cover | None:
    """:func:`_cover`'s figures for one ``patch``: its shape and texture, and the photos
    compared without ``hidden`` (the patch, or the patches) and its margin."""
    region = p.region
    area = int(patch.sum())
    contours, _ = cv2.findContours(patch.astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
    hull = float(cv2.contourArea(cv2.convexHull(max(contours, key=cv2.contourArea))))
    inner = cv2.erode(patch.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    measurable = int(inner.sum()) >= MIN_OVERLAP_PX
    under = (_correlation(p.grey_a[inner].astype(np.float64), p.grey_b[inner].astype(np.float64))
             if measurable else 0.0)
    margin = 2 * COVER_MARGIN_PX + 1
    rest = region & (cv2.dilate(hidden.astype(np.uint8), np.ones((margin, margin), np.uint8))
                     == 0)
    if int(rest.sum()) < MIN_OVERLAP_PX:
        return None
    correlation = _correlation(p.grey_a[rest].astype(np.float64),
                               p.grey_b[rest].astype(np.float64))
    shifts = _chroma_shifts(_lab_chroma(p.soft_a[rest]), _lab_chroma(p.soft_b[rest]))
    left = None if patches is None else patches & rest
    blend = None
    if measurable:

        def blend() -> bool:  # read when the rule asks (Cover.translucent)
            return _translucent(p.soft_a[inner], p.soft_b[inner])
    return Cover(area / int(region.sum()), area / max(hull, 1.0), float(kept[patch].mean()),
                 under, correlation, shifts, _largest_share(left, compared), blend,
                 measured=measurable)


def _translucent(a: NDArray[np.uint8], b: NDArray[np.uint8]) -> bool:
    """Whether, over a patch ((n, 3) RGB pixels of the two aligned photos), either photo is
    the other seen through a translucent overlay (:attr:`Cover.translucent`)."""
    x, y = a.astype(np.float64), b.astype(np.float64)
    return _blend_fit(x, y) or _blend_fit(y, x)


def _blend_fit(bare: NDArray[np.float64], covered: NDArray[np.float64]) -> bool:
    """Whether ``covered ~ gain * bare + colour`` (one gain, a colour per channel) holds as a
    translucent overlay's blend (``TRANSLUCENT_*``). Fitted on the pixels it explains best
    (:func:`_fitted_on_best`): the overlay's own opaque print (a logo's letters) and its
    soft outline are left out. The gain and the fit are read on those pixels, the
    per-channel gains there must agree, and the texture seen through must stay above the
    noise (``TRANSLUCENT_MIN_TEXTURE``)."""

    def solve(keep: NDArray[np.bool_]) -> tuple[float, NDArray[np.float64]]:
        xs, ys = bare[keep], covered[keep]
        dx, dy = xs - xs.mean(axis=0), ys - ys.mean(axis=0)
        spread = float((dx * dx).sum())
        gain = float((dx * dy).sum()) / spread if spread > 0 else 0.0
        return gain, ys.mean(axis=0) - gain * xs.mean(axis=0)

    def residual(fit: tuple[float, NDArray[np.float64]]) -> NDArray[np.float64]:
        gain, offsets = fit
        return np.linalg.norm(bare * gain + offsets - covered, axis=1)  # type: ignore[no-any-return]

    gain, offsets = _fitted_on_best(len(bare), solve, residual)
    errors = residual((gain, offsets))
    keep = errors <= np.percentile(errors, LIGHT_FIT_SHARE)
    xs, ys = bare[keep], covered[keep]
    dx, dy = xs - xs.mean(axis=0), ys - ys.mean(axis=0)
    spread = (dx * dx).sum(axis=0)
    if float(spread.sum()) <= 0:
        return False
    channel_gains = (dx * dy).sum(axis=0) / np.maximum(spread, 1e-6)
    seen_through = abs(gain) * float(np.sqrt(spread.sum() / (3 * len(xs))))
    unexplained = float((errors[keep] ** 2).sum())
    fit = 1.0 - unexplained / max(float((dy * dy).sum()), 1e-6)
    low, high = TRANSLUCENT_GAINS
    return bool(low <= gain <= high and low <= channel_gains.min()
                and channel_gains.max() <= high
                and channel_gains.max() - channel_gains.min() <= TRANSLUCENT_GAIN_SPREAD
                and seen_through >= TRANSLUCENT_MIN_TEXTURE and fit >= TRANSLUCENT_MIN_FIT)


def _largest_share(patches: NDArray[Any] | None, compared: int) -> float:
    """The largest connected patch of ``patches`` (8-connected), as a share of ``compared``
    pixels (0 without patches)."""
    if patches is None or compared == 0:
        return 0.0
    count, _, stats, _ = cv2.connectedComponentsWithStats(patches.astype(np.uint8),
                                                          connectivity=8)
    return int(stats[1:, cv2.CC_STAT_AREA].max()) / compared if count > 1 else 0.0


def _lab(pixels: NDArray[np.uint8]) -> NDArray[np.float64]:
    """(n, 3) RGB pixels -> their (n, 3) CIE L*, a*, b*."""
    lab = cv2.cvtColor(pixels.reshape(1, -1, 3), cv2.COLOR_RGB2LAB).reshape(-1, 3)
    out: NDArray[np.float64] = lab.astype(np.float64)
    out[:, 0] *= 100 / 255
    out[:, 1:] -= 128.0
    return out


def _colour_changed(lab_a: NDArray[np.float64], lab_b: NDArray[np.float64],
                    among: NDArray[np.bool_] | None = None) -> NDArray[np.bool_]:
    """Per aligned pixel (:func:`_lab` of each photo), whether it has another colour: its
    lightness, after one map fitted to all of them, and its hue differ by ``RECOLOUR_DELTA``
    together (the hue only from ``RECOLOUR_MIN_LIGHTNESS``), or its chroma changed
    ``RECOLOUR_DYE_RATIO`` times by ``RECOLOUR_DYE_CHROMA``. ``among``: only these pixels are
    tested, the others come out False (the map is fitted to all of them either way)."""
    gain, offset = _robust_linear_map(lab_a[:, :1], lab_b[:, :1])
    if among is not None:
        out_among = np.zeros(len(among), dtype=bool)
        out_among[among] = _colour_changed_mapped(lab_a[among], lab_b[among], gain, offset)
        return out_among
    return _colour_changed_mapped(lab_a, lab_b, gain, offset)


def _colour_changed_mapped(lab_a: NDArray[np.float64], lab_b: NDArray[np.float64],
                           gain: NDArray[np.float64], offset: NDArray[np.float64]
                           ) -> NDArray[np.bool_]:
    """:func:`_colour_changed` per pixel, given the lightness map (``gain``, ``offset``)."""
    light_a, light_b = lab_a[:, 0] * gain[0] + offset[0], lab_b[:, 0]
    ab_a, ab_b = lab_a[:, 1:], lab_b[:, 1:]
    chroma_a, chroma_b = np.hypot(ab_a[:, 0], ab_a[:, 1]), np.hypot(ab_b[:, 0], ab_b[:, 1])
    # CIE's hue difference: 2 sqrt(Ca Cb) |sin(turn / 2)| = sqrt(2 (Ca Cb - a . b))
    hue_delta = np.sqrt(np.maximum(2.0 * (chroma_a * chroma_b - (ab_a * ab_b).sum(axis=1)), 0.0))
    lit = np.maximum(light_a, light_b) >= RECOLOUR_MIN_LIGHTNESS
    hue_delta[~lit] = 0.0
    ratio = (chroma_a + 2.0) / (chroma_b + 2.0)
    dyed = (lit & ((ratio > RECOLOUR_DYE_RATIO) | (ratio < 1 / RECOLOUR_DYE_RATIO))
            & (np.abs(chroma_a - chroma_b) >= RECOLOUR_DYE_CHROMA))
    out: NDArray[np.bool_] = (np.hypot(light_a - light_b, hue_delta) > RECOLOUR_DELTA) | dyed
    return out


def _window_correlation(a: NDArray[Any], b: NDArray[Any], size: int
                        ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Per pixel, the grey-level correlation of ``a`` and ``b`` over the ``size`` x ``size``
    window around it, and each photo's grey-level spread there."""
    x = a.astype(np.float64)
    y = b.astype(np.float64)

    def mean(v: NDArray[np.float64]) -> NDArray[np.float64]:
        out: NDArray[np.float64] = np.asarray(cv2.boxFilter(v, -1, (size, size)), np.float64)
        return out

    mean_x, mean_y = mean(x), mean(y)
    var_x = np.maximum(mean(x * x) - mean_x**2, 0.0)
    var_y = np.maximum(mean(y * y) - mean_y**2, 0.0)
    covariance = mean(x * y) - mean_x * mean_y
    correlation = covariance / np.sqrt(np.maximum(var_x * var_y, 1e-9))
    return correlation, np.sqrt(var_x), np.sqrt(var_y)


def _colour_region(region: NDArray[np.bool_], valid: NDArray[np.bool_],
                   warped: NDArray[np.uint8], fg_b: NDArray[np.bool_]
                   ) -> tuple[NDArray[np.bool_], bool]:
    """The pixels the light route compares colours on, and whether the outline band was left
    out. Along the product's outline each photo's pixels mix the product with its own
    background (defocus, resampling, a cut-out's soft matte): against the listing's white, a
    shopper's table or a shop's backdrop bleeds its colour into a band ~2 px wide that no
    light map explains (measured on same-item-reshoot: most of a true re-shoot's colour shift
    sat within 2 px of the outline, the interior agreed to ~2-4). That band is left out when
    the query shows another background (not white) on most of the ring just outside the
    listing product's outline. On a white background (an edited copy) it stays in: there a
    white part of the product is background in one photo, and a colour change along it is
    the only evidence left of it (a white top and its yellow variant). The plain colour
    shift always keeps the band: left out there too, it admitted another colour on
    same-item-heldout."""
    outside = outer_background(~fg_b)
    ring = valid & outside & (cv2.distanceTransform(outside.astype(np.uint8), cv2.DIST_L2, 3)
                              <= RING_PX)
    if not ring.any() or float((warped[ring].min(axis=1) < WHITE_LEVEL).mean()) < 0.5:
        return region, False
    inner = cv2.distanceTransform((~outside).astype(np.uint8), cv2.DIST_L2, 3) > EDGE_PX
    colours = region & inner
    if int(colours.sum()) < MIN_OVERLAP_PX:
        return region, False
    return colours, True


def outer_background(background: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """The ``background`` pixels connected to the frame: a white panel or stripe inside the
    product is not background for this purpose (also the bench's re-shoot cut-out)."""
    _, labels = cv2.connectedComponents(background.astype(np.uint8), connectivity=4)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    out: NDArray[np.bool_] = np.isin(labels, border[border > 0]) & background
    return out


def _light_map(a: NDArray[np.uint8], b: NDArray[np.uint8]
               ) -> tuple[tuple[float, float, float], NDArray[np.uint8]]:
    """Per-channel gain and offset mapping the aligned pixels ``a`` onto ``b`` (R, G, B
    each ``b ~ gain * a + offset``), and ``a`` so mapped. A re-shot photo's white balance
    scales the channels apart and its light and gamma stretch them: the same surface then
    differs by such a map, which turns no hue into another where the other 30% of the
    product keeps its colour. The fit is refitted twice on the ``LIGHT_FIT_SHARE`` percent
    of pixels it explains best, so a part of the product of another colour (a flavour band,
    a trim) stays unexplained instead of bending it."""
    fit = _light_fit(a, b)
    return _gains(fit), _mapped(fit, a)


def _light_fit(a: NDArray[np.uint8], b: NDArray[np.uint8]
               ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """:func:`_light_map`'s per-channel (gains, offsets)."""
    return _robust_linear_map(a.astype(np.float64), b.astype(np.float64))


def _gains(fit: tuple[NDArray[np.float64], NDArray[np.float64]]
           ) -> tuple[float, float, float]:
    """A :func:`_light_fit` map's channel gains (R, G, B), as :attr:`LightMap.gains` has
    them."""
    gains = fit[0]
    return float(gains[0]), float(gains[1]), float(gains[2])


def _mapped(fit: tuple[NDArray[np.float64], NDArray[np.float64]], a: NDArray[np.uint8]
            ) -> NDArray[np.uint8]:
    """(n, 3) RGB pixels under a :func:`_light_fit` map."""
    gains, offsets = fit
    return np.clip(np.rint(a.astype(np.float64) * gains + offsets), 0, 255).astype(np.uint8)


def _unmapped(fit: tuple[NDArray[np.float64], NDArray[np.float64]], b: NDArray[np.uint8]
              ) -> NDArray[np.uint8]:
    """(n, 3) RGB pixels under a :func:`_light_fit` map's inverse."""
    gains, offsets = fit
    return np.clip(np.rint((b.astype(np.float64) - offsets) / np.maximum(gains, 1e-3)),
                   0, 255).astype(np.uint8)


NEUTRAL_GREYS = (64.0, 128.0, 200.0, 240.0)
"""Grey levels at which :func:`_shaded_light_map` checks that a neutral grey stays neutral."""


def _shaded_light_map(a: NDArray[np.uint8], b: NDArray[np.uint8], where: NDArray[np.float64],
                      terms: int) -> tuple[float, NDArray[np.uint8], NDArray[np.float64]]:
    """A light map for a photo re-shot under uneven light: per channel, on log levels,
    ``log(1 + b) ~ power * log(1 + a) + gain + shading(x, y)`` (``where``: (n, 2) positions
    in -1..1; the shading the first ``terms`` of :func:`_shading_terms`), so a tone curve
    (gamma, contrast), a white balance and a shading that changes smoothly across the photo
    (a lamp's fall-off, to one side or all round a spot) are one map. Fitted as
    :func:`_robust_linear_map` is (refitted on the best ``LIGHT_FIT_SHARE`` percent: a part
    of another colour stays unexplained). Returns (the neutral spread, see
    :attr:`ShadedLight.neutral_spread`; ``a`` mapped; the map, one row per channel: power,
    gain, then the shading's coefficients)."""
    step = max(1, len(a) // LIGHT_FIT_PIXELS)  # fitted on every step-th pixel
    log_a = np.log1p(a[::step].astype(np.float64))
    fit_b = np.log1p(b[::step].astype(np.float64))
    shading = _shading_terms(where[::step], terms)
    fit_design = [np.column_stack([log_a[:, c], np.ones(len(log_a)), shading])
                  for c in range(3)]

    def solve(keep: NDArray[np.bool_]) -> NDArray[np.float64]:
        return np.stack([_least_squares(fit_design[c][keep], fit_b[keep, c])
                         for c in range(3)])

    def residual(coef: NDArray[np.float64]) -> NDArray[np.float64]:
        fitted = np.stack([fit_design[c] @ coef[c] for c in range(3)], axis=1)
        return np.linalg.norm(fitted - fit_b, axis=1)  # type: ignore[no-any-return]

    coef = _fitted_on_best(len(fit_b), solve, residual)
    greys = np.log1p(np.asarray(NEUTRAL_GREYS))
    outputs = np.expm1(coef[:, :1] * greys[None, :] + coef[:, 1:2])  # (channel, grey)
    spread = float(np.max(outputs.max(axis=0) / np.maximum(outputs.min(axis=0), 1e-3)))
    if not np.isfinite(spread) or outputs.min() <= 0:
        spread = float("inf")
    return spread, _shaded(coef, a, where), coef


def _least_squares(x: NDArray[np.float64], y: NDArray[np.float64]) -> NDArray[np.float64]:
    """The least-squares ``coef`` of ``x @ coef ~ y``, by the normal equations: at the shaded
    map's 7 columns and ~1,500 rows ~0.06 ms, where lstsq on the rows took ~1.5 ms."""
    out: NDArray[np.float64] = np.asarray(np.linalg.lstsq(x.T @ x, x.T @ y, rcond=None)[0],
                                          dtype=np.float64)
    return out


def _shaded(coef: NDArray[np.float64], a: NDArray[np.uint8], where: NDArray[np.float64]
            ) -> NDArray[np.uint8]:
    """(n, 3) pixels ``a`` at ``where`` under the shaded light map ``coef`` (one row per
    channel: power, gain, the shading's coefficients; :func:`_shaded_light_map`)."""
    log_a = np.log1p(a.astype(np.float64))
    shading = _shading_terms(where, coef.shape[1] - 2)
    mapped = np.stack([coef[c, 0] * log_a[:, c] + coef[c, 1] + shading @ coef[c, 2:]
                       for c in range(3)], axis=1)
    out: NDArray[np.uint8] = np.clip(np.rint(np.expm1(mapped)), 0, 255).astype(np.uint8)
    return out


def _shading_terms(where: NDArray[np.float64], terms: int) -> NDArray[np.float64]:
    """(n, ``terms``) terms of a smooth shading at positions ``where`` ((n, 2), x and y in
    -1..1), of x, y, x^2, y^2, xy. The first two are a plane: light falling off one way. A
    lamp over the product is brightest at a spot and falls off all round it, which no plane
    follows; with the squares and the product of the two, a spot anywhere in or near the
    photo is one surface (its log light ~ a paraboloid near its brightest)."""
    x, y = where[:, 0], where[:, 1]
    out: NDArray[np.float64] = np.column_stack([x, y, x * x, y * y, x * y])[:, :terms]
    return out


def _positions(mask: NDArray[np.bool_]) -> NDArray[np.float64]:
    """(n, 2) positions (x, y) of ``mask``'s pixels, in -1..1 across the photo."""
    ys, xs = np.nonzero(mask)
    height, width = mask.shape
    out: NDArray[np.float64] = np.stack(
        [xs / max(1, width - 1), ys / max(1, height - 1)], axis=1) * 2 - 1
    return out


def _white_unexplained(p: _AlignedPixels, coef: NDArray[np.float64]) -> float:
    """:attr:`ShadedLight.white_unexplained`: :func:`_white_against` of the listing, the
    query under the shaded map ``coef``."""
    return _white_against(p.fg_b, p.soft_b, p.soft_a, p.valid,
                          lambda pixels, where: _shaded(coef, pixels, _positions(where)))


def _white_unexplained_between(
        p: _AlignedPixels,
        fit: tuple[NDArray[np.float64], NDArray[np.float64]] | None = None) -> float:
    """:attr:`Alignment.white_unexplained` (``fit``: a :func:`_light_fit` map from the query
    to the listing, :attr:`Alignment.light_white_unexplained`): :func:`_white_against` of
    the listing (the query mapped onto it) and of the query (the listing mapped back), the
    larger. ~1-2 ms a pair."""
    onto_listing = onto_query = None
    if fit is not None:
        def onto_listing(pixels: NDArray[np.uint8], where: NDArray[np.bool_]
                         ) -> NDArray[np.uint8]:
            return _mapped(fit, pixels)

        def onto_query(pixels: NDArray[np.uint8], where: NDArray[np.bool_]
                       ) -> NDArray[np.uint8]:
            return _unmapped(fit, pixels)
    return max(_white_against(p.fg_b, p.soft_b, p.soft_a, p.valid, onto_listing),
               _white_against(p.fg_a, p.soft_a, p.soft_b, p.valid, onto_query))


def _white_against(
        fg: NDArray[np.bool_], white_side: NDArray[np.uint8], other: NDArray[np.uint8],
        valid: NDArray[np.bool_],
        mapped: Callable[[NDArray[np.uint8], NDArray[np.bool_]], NDArray[np.uint8]] | None = None
        ) -> float:
    """Of the convex hull of one photo's foreground ``fg``, the share of pixels where that
    photo (``white_side``) shows white (every channel >= ``WHITE_LEVEL``, as its background;
    ``EDGE_PX`` + 1 clear of its foreground) and the ``other`` photo, under ``mapped`` when
    given (``(pixels, where) -> pixels`` in ``white_side``'s light), a chroma more than
    ``WHITE_UNEXPLAINED_SHIFT`` from it and from the other photo's own pixel nearest outside
    the hull (its backdrop: a re-shoot shows it between an arm and the body)."""
    contours, _ = cv2.findContours(fg.astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return 0.0
    hull = np.zeros(fg.shape, np.uint8)
    cv2.fillPoly(hull, [cv2.convexHull(np.vstack(contours))], 1)
    inside = hull > 0
    clear = cv2.distanceTransform((~fg).astype(np.uint8), cv2.DIST_L2, 3) > EDGE_PX + 1
    white = inside & ~fg & valid & clear & (white_side.min(axis=2) >= WHITE_LEVEL)
    outside = valid & ~inside
    if not white.any() or not outside.any():
        return 0.0
    # Each white pixel's nearest pixel outside the hull, where the other photo shows its
    # backdrop.
    _, labels = cv2.distanceTransformWithLabels((~outside).astype(np.uint8), cv2.DIST_L2, 3,
                                                labelType=cv2.DIST_LABEL_PIXEL)
    order = np.zeros(int(labels.max()) + 1, np.intp)
    order[labels[outside]] = np.arange(int(outside.sum()))
    ys, xs = np.nonzero(outside)
    nearest = order[labels[white]]
    seen = other[white]
    as_white = _lab_chroma(seen if mapped is None else mapped(seen, white))
    to_white = np.linalg.norm(as_white - _lab_chroma(white_side[white]), axis=1)
    to_backdrop = np.linalg.norm(_lab_chroma(seen) - _lab_chroma(other[ys[nearest], xs[nearest]]),
                                 axis=1)
    unexplained = np.minimum(to_white, to_backdrop) > WHITE_UNEXPLAINED_SHIFT
    return float(unexplained.sum()) / max(1, int(inside.sum()))


def _grey_levels(pixels: NDArray[np.uint8]) -> NDArray[np.float64]:
    """ITU-R 601 luma of (n, 3) RGB pixels, as OpenCV's grey conversion weighs them."""
    return pixels.astype(np.float64) @ np.array([0.299, 0.587, 0.114])  # type: ignore[no-any-return]


def _robust_linear_map(x: NDArray[np.float64], y: NDArray[np.float64]
                       ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per column, the gain and offset mapping ``x`` onto ``y`` ((n, k) each), fitted on a
    strided sample of about ``LIGHT_FIT_PIXELS`` rows (:func:`_fitted_on_best`, the distance
    over the k columns): a part of another colour or shade stays unexplained instead of
    bending the fit."""
    step = max(1, len(x) // LIGHT_FIT_PIXELS)  # a strided sample fits as well, at less cost
    fit_x, fit_y = x[::step], y[::step]

    def solve(keep: NDArray[np.bool_]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        xs, ys = fit_x[keep], fit_y[keep]
        mean_x, mean_y = xs.mean(axis=0), ys.mean(axis=0)
        spread = ((xs - mean_x) ** 2).mean(axis=0)
        gains = np.where(spread > 1e-6,
                         ((xs - mean_x) * (ys - mean_y)).mean(axis=0) / np.maximum(spread, 1e-6),
                         1.0)
        return gains, mean_y - gains * mean_x

    def residual(fit: tuple[NDArray[np.float64], NDArray[np.float64]]) -> NDArray[np.float64]:
        gains, offsets = fit
        return np.linalg.norm(fit_x * gains + offsets - fit_y, axis=1)  # type: ignore[no-any-return]

    return _fitted_on_best(len(fit_x), solve, residual)


def _fitted_on_best(n: int, solve: Callable[[NDArray[np.bool_]], _Fit],
                    residual: Callable[[_Fit], NDArray[np.float64]]) -> _Fit:
    """``solve`` on all ``n`` rows, then refitted twice on the ``LIGHT_FIT_SHARE`` percent of
    them the previous fit explains best (``residual``, per row): a part of another colour or
    a sticker stays unexplained instead of bending the fit. The light map's and the
    grading's fits (:func:`_robust_linear_map`, :func:`_fit_grading`)."""
    fit = solve(np.ones(n, dtype=bool))
    for _ in range(2):
        errors = residual(fit)
        fit = solve(errors <= np.percentile(errors, LIGHT_FIT_SHARE))
    return fit


def _correlation(a: NDArray[np.float64], b: NDArray[np.float64]) -> float:
    """Normalised cross-correlation of two equally long grey-level samples (0 when flat)."""
    a, b = a - a.mean(), b - b.mean()
    denominator = float(np.sqrt((a**2).sum() * (b**2).sum()))
    return float((a * b).sum()) / denominator if denominator > 0 else 0.0


def _lab_chroma(pixels: NDArray[np.uint8]) -> NDArray[np.float64]:
    """(n, 3) RGB pixels -> their (n, 2) Lab chroma (a*, b*), 0 for grey."""
    lab = cv2.cvtColor(pixels.reshape(1, -1, 3), cv2.COLOR_RGB2LAB).reshape(-1, 3)
    out: NDArray[np.float64] = lab[:, 1:].astype(np.float64) - 128.0
    return out


def _near_clipping(a: NDArray[np.uint8], b: NDArray[np.uint8]) -> NDArray[np.bool_]:
    """Pixels of two aligned photos (H x W x 3) within ``CLIP_PX`` of one where a channel of
    either is within ``CLIP_MARGIN`` of 0 or 255 (the blur that softens the colours spreads
    a clipped channel that far)."""
    clipped = np.zeros(a.shape[:2], np.uint8)
    for x in (a, b):
        clipped |= ((x <= CLIP_MARGIN) | (x >= 255 - CLIP_MARGIN)).any(axis=2).astype(np.uint8)
    kernel = np.ones((2 * CLIP_PX + 1, 2 * CLIP_PX + 1), np.uint8)
    return cv2.dilate(clipped, kernel) > 0


def _rgb_hue(rgb: NDArray[Any]) -> NDArray[np.float64]:
    """Hue angle (radians) of pixels (N x 3, 0-255) on the RGB hexcone (HSV's hue)."""
    hsv = cv2.cvtColor(rgb.reshape(-1, 1, 3).astype(np.float32) / 255.0, cv2.COLOR_RGB2HSV)
    return np.radians(hsv[:, 0, 0].astype(np.float64))


def _grading_terms(rgb: NDArray[Any]) -> NDArray[np.float64]:
    """Per pixel (N x 3) and channel, the terms of a grading (N x 3 x 4): the channel itself,
    two greys it may be moved away from (luma, as a saturation edit takes it, and the
    channels' mid-range, as HSL's does) and a constant (contrast about a mean, a fade)."""
    x = rgb.astype(np.float64)
    luma = _grey_levels(rgb)
    mid = (x.max(axis=1) + x.min(axis=1)) / 2.0
    terms = np.empty((*x.shape, 4))
    terms[..., 0] = x
    terms[..., 1] = luma[:, None]
    terms[..., 2] = mid[:, None]
    terms[..., 3] = 1.0
    return terms


def _fit_grading(rgb_a: NDArray[np.uint8], rgb_b: NDArray[np.uint8],
                 clipped: NDArray[np.bool_]) -> NDArray[np.float64]:
    """The weights of the grading (:func:`_grading_terms`: one set for all three channels, so
    it keeps every hue on the RGB hexcone) that takes the listing's pixels (``rgb_b``, N x 3)
    to the query's (``rgb_a``), fitted on a strided sample of the pixels away from clipping
    (:func:`_fitted_on_best`: a sticker or a part of another colour does not bend it). With
    too few such pixels, or a gain on the channel itself below ``MIN_GRADING_GAIN``, no
    grading (``NO_GRADING``)."""
    fit = ~clipped
    if int(fit.sum()) < MIN_OVERLAP_PX:
        return NO_GRADING
    step = max(1, int(fit.sum()) // LIGHT_FIT_PIXELS)
    terms = _grading_terms(rgb_b[fit][::step])
    target = rgb_a[fit][::step].astype(np.float64)

    def solve(keep: NDArray[np.bool_]) -> NDArray[np.float64]:
        weights = np.linalg.lstsq(terms[keep].reshape(-1, 4), target[keep].reshape(-1),
                                  rcond=None)[0]
        return np.asarray(weights, dtype=np.float64)

    def residual(weights: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.linalg.norm(terms @ weights - target, axis=1)  # type: ignore[no-any-return]

    weights = _fitted_on_best(len(terms), solve, residual)
    # a negative gain turns every hue round: that is no grading
    return weights if weights[0] >= MIN_GRADING_GAIN else NO_GRADING


def _graded(photo: NDArray[np.uint8], weights: NDArray[np.float64]) -> NDArray[np.float64]:
    """A photo (H x W x 3) graded by ``weights`` (:func:`_fit_grading`), clipped to 0-255 as
    an edit clips it, then softened as the compared colours are (``COLOUR_BLUR_PX``)."""
    height, width = photo.shape[:2]
    graded = np.clip(_grading_terms(photo.reshape(-1, 3)) @ weights, 0.0, 255.0)
    return np.asarray(cv2.GaussianBlur(graded.reshape(height, width, 3).astype(np.float32),
                                       (0, 0), COLOUR_BLUR_PX), dtype=np.float64)


def _graded_hue(warped: NDArray[np.uint8], listing: NDArray[np.uint8],
                soft_a: NDArray[np.uint8], soft_b: NDArray[np.uint8],
                region: NDArray[np.bool_]) -> HueAgreement | None:
    """:func:`_hue_agreement` over ``region`` of two aligned photos (H x W x 3: the warped
    query and the listing, as they are and softened), against the listing graded as the
    query appears to be (:func:`_fit_grading` away from :func:`_near_clipping`)."""
    a, b = soft_a[region], soft_b[region]
    weights = _fit_grading(a, b, _near_clipping(warped, listing)[region])
    return _hue_agreement(a, b, _graded(listing, weights)[region])


def _hue_agreement(soft_a: NDArray[np.uint8], soft_b: NDArray[np.uint8],
                   graded_b: NDArray[np.float64] | None = None) -> HueAgreement | None:
    """How the hues of aligned pixels (N x 3 RGB, softened; ``soft_a`` the query's,
    ``soft_b`` the listing's) compare (see :class:`HueAgreement`); None when fewer than
    ``MIN_OVERLAP_PX`` pixels are chromatic (Lab chroma >= ``HUE_CHROMA`` in either). A
    saturation, vibrance, contrast or brightness edit moves every channel away from (or
    towards) a grey: it keeps the pixel's hue on the RGB hexcone (the Lab hue it turns by
    5-7 degrees) and scales each pixel's chroma by its own factor (no single gain fits,
    :func:`_colour_shifts`). Where a channel clips, the hue turns too, by up to tens of
    degrees: so the hues are compared with those of the listing graded as the query
    appears to be, clipping included (``graded_b``, :func:`_fit_grading`; the listing as
    it is without it), over the pixels whose hue is well defined in both (channels
    ``HUE_SPAN`` apart). The chroma ratios are the query's over the listing's as it is: a
    white part dyed, or a colour washed to grey (a dark variant's, where its channels clip
    at 0), multiplies or divides them many times."""
    ab_a, ab_b = _lab_chroma(soft_a), _lab_chroma(soft_b)
    chroma_a, chroma_b = np.linalg.norm(ab_a, axis=1), np.linalg.norm(ab_b, axis=1)
    chromatic = np.maximum(chroma_a, chroma_b) >= HUE_CHROMA
    if int(chromatic.sum()) < MIN_OVERLAP_PX:
        return None
    a = soft_a[chromatic].astype(np.float64)
    b = (graded_b if graded_b is not None else soft_b.astype(np.float64))[chromatic]
    defined = ((a.max(axis=1) - a.min(axis=1) >= HUE_SPAN)
               & (b.max(axis=1) - b.min(axis=1) >= HUE_SPAN))
    if int(defined.sum()) < MIN_OVERLAP_PX:
        defined[:] = True
    turn = np.degrees(np.abs(np.angle(np.exp(
        1j * (_rgb_hue(a[defined]) - _rgb_hue(b[defined]))))))
    ratio = (chroma_a[chromatic] + 2.0) / (chroma_b[chromatic] + 2.0)
    low, high = np.percentile(ratio, [5, 95])
    return HueAgreement(float(chromatic.mean()), float(np.percentile(turn, 95)),
                        (float(low), float(high)))


def _colour_shifts(a: NDArray[np.uint8], b: NDArray[np.uint8]) -> tuple[float, ...]:
    """Percentiles over aligned pixels of the distance of their Lab chroma (a*, b*): small for
    the same colours under any brightness edit, large where part of the product changed
    colour. High percentiles, not the median: another colour of a garment often changes a
    waistband or a trim only, and a model wearing it keeps her skin, hair and trousers."""
    return _chroma_shifts(_lab_chroma(a), _lab_chroma(b))


def _chroma_shifts(ab_a: NDArray[np.float64], ab_b: NDArray[np.float64]
                   ) -> tuple[float, ...]:
    """:func:`_colour_shifts` of pixels given their :func:`_lab_chroma`."""
    # One global gain on the chroma: brightness, contrast and saturation edits scale it,
    # another colour turns it (and no gain explains that).
    power = float((ab_b * ab_b).sum())
    gain = float(np.clip((ab_a * ab_b).sum() / power, *CHROMA_GAIN)) if power > 0 else 1.0
    distance = np.linalg.norm(ab_a - gain * ab_b, axis=1)
    return tuple(float(v) for v in np.percentile(distance, SHIFT_PERCENTILES))


def aligned_without_keypoints(a: PhotoFeatures, b: PhotoFeatures, rule: SameItemRule
                              ) -> Alignment | None:
    """``a`` aligned onto ``b`` without keypoints (a plain product) on the
    :func:`coarse_homography`; when that alignment falls short of ``rule``'s keypoint-free
    limits by little (correlation within ``COARSE_REFINE_REACH``), the mapping refined on the
    grey levels (:func:`refine_homography`) and the better-correlated of the two alignments
    (None when no mapping is found). The coarse mapping is an affine one fitted at a quarter
    of ``VERIFY_SIZE`` over the whole photos, so a copy whose white background was swapped
    for a colour lines up a pixel or two off around its outline (a plain stability ball:
    correlation 0.95-0.97, where the route asks 0.97); refined over a full homography at half
    that size it lines up as a copy does (docs/matching.md, "Keypoint-free alignments
    refined")."""
    coarse = coarse_homography(a, b)
    found = align(a, b, coarse) if coarse is not None else None
    if coarse is None or found is None:
        return None
    short = (found.correlation < rule.coarse_correlation
             or found.colour_shift(rule.shift_percentile) > rule.coarse_colour_shift)
    if not short or found.correlation < rule.coarse_correlation - COARSE_REFINE_REACH:
        return found
    sharper = refine_homography(a, b, coarse)
    again = align(a, b, sharper) if sharper is not None else None
    return again if again is not None and again.correlation > found.correlation else found


def fetching_loader(fetcher: ImageFetcher, max_pixels: int) -> GalleryLoader:
    """Stored ``image_ref`` -> photo, through the ingest fetcher (its roots, URL rules, byte
    cap and timeout), decoded at ``VERIFY_SIZE``: what a search process can reach is what
    ingest could. Raises ``FetchError`` / ``ImageDecodeError`` with a reason."""

    def load(image_ref: str) -> Image.Image:
        return decode_image(fetcher.fetch(stored_image(image_ref)), max_pixels,
                            min_size=VERIFY_SIZE)

    return load


class SameItemVerifier:
    """Decides for retrieved candidates whether each is the query's item, with evidence."""

    def __init__(self, load_gallery: GalleryLoader, rule: SameItemRule | None = None,
                 cache_size: int = CACHE_SIZE) -> None:
        self._load = load_gallery
        self.rule = rule or SameItemRule()
        self._cache: OrderedDict[str, PhotoFeatures] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    @classmethod
    def for_fetcher(cls, fetcher: ImageFetcher, max_pixels: int,
                    rule: SameItemRule | None = None) -> SameItemVerifier:
        """A verifier reading listing photos through ``fetcher``: build it with
        ``lookalike.app.build_fetcher`` so that the configured roots, egress allow-lists,
        byte cap and deadline apply here as in ingest and reindex."""
        return cls(fetching_loader(fetcher, max_pixels), rule)

    def gallery_features(self, image_ref: str) -> PhotoFeatures:
        """Features of a stored listing photo, from the cache or loaded and computed."""
        with self._lock:
            found = self._cache.get(image_ref)
            if found is not None:
                self._cache.move_to_end(image_ref)
                return found
        features = photo_features(self._load(image_ref))
        with self._lock:
            self._cache[image_ref] = features
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return features

    def compare(self, query: PhotoFeatures, other: PhotoFeatures, similarity: float,
                allow_coarse: bool = True, matched: KeypointMatch | None = None,
                print_check: bool = False,
                mirror: Callable[[], PhotoFeatures | None] | None = None,
                overlay: Overlay = "open") -> Evidence:
        """The evidence for one pair of photos, and the rule's decision (``allow_coarse``:
        whether a keypoint-free alignment may be tried, see ``SameItemRule.max_coarse``;
        ``matched``: the pair's :meth:`keypoint_matches` result, when already computed;
        ``print_check``: the print must agree as for segmented photos, whatever the pair;
        ``mirror``: the query's :func:`mirrored` keypoints (None: not within the budget,
        ``rule.max_mirror``): a pair refused as it is, of similarity
        ``rule.mirror_similarity`` or more, is matched and aligned again with them, for a
        mirrored re-listing; ``overlay``: when the rule's overlay route may accept the pair, see
        :data:`Overlay`)."""
        inliers, homography, points = matched if matched is not None else ransac(query, other)
        alignment = (align(query, other, homography, points, print_check)
                     if homography is not None else None)
        colour = float(np.dot(query.colour, other.colour))
        tried = allow_coarse and self.rule.wants_coarse(similarity, inliers, colour)
        if tried:
            found = aligned_without_keypoints(query, other, self.rule)
            alignment = replace(found, by_keypoints=False) if found is not None else alignment
        same, why, alignment = self._judged(query, other, homography, points, alignment,
                                            (similarity, inliers, colour), print_check, overlay)
        # A mirrored re-listing: SIFT finds too few matches, or symmetric parts of the
        # product match in a mapping whose alignment disagrees. Its colours are decided once
        # aligned, so not asked here.
        flip = not same and mirror is not None and similarity >= self.rule.mirror_similarity
        flipped = mirror() if flip and mirror is not None else None
        if flipped is not None:
            match = ransac(flipped, other)
            if match[0] >= self.rule.min_inliers:
                assert query.grey is not None  # mirror() gave keypoints: it had the grey
                m_inliers, m_homography, m_points = unmirror(match, query.grey.shape[1])
                assert m_homography is not None
                m_same, m_why, m_alignment = self._judged(
                    query, other, m_homography, m_points,
                    align(query, other, m_homography, m_points, print_check),
                    (similarity, m_inliers, colour), print_check, overlay)
                if m_same:
                    inliers, alignment = m_inliers, m_alignment
                    same, why = True, f"{m_why}; the photo mirrored"
        if (self.rule.silhouette_route and not same and inliers < self.rule.min_inliers
                and similarity >= self.rule.silhouette_similarity):
            silhouette = silhouette_agreement(query, other)
            if silhouette is not None:
                accepted, because = self.rule.decide_silhouette(similarity, silhouette)
                if accepted:  # not on an alignment: a price match reports none
                    same, why, alignment = True, f"{inliers} inliers: {because}", None
        shift = alignment.colour_shift(self.rule.shift_percentile) if alignment else None
        return Evidence(same, similarity, inliers, colour, alignment, why, shift, tried,
                        mirror_tried=flipped is not None)

    def _judged(self, query: PhotoFeatures, other: PhotoFeatures,
                homography: NDArray[np.float64] | None, points: NDArray[np.float32],
                alignment: Alignment | None, pair: tuple[float, int, float], print_check: bool,
                overlay: Overlay) -> tuple[bool, str, Alignment | None]:
        """(same item?, why, the alignment decided on) for a pair as ``homography`` aligned
        it: the rule's decision, and for a pair it refuses with a keypoint mapping the second
        look of :meth:`_refined`. ``pair``: (similarity, inliers, colour agreement)."""
        similarity, inliers, colour = pair
        same, why = self.rule.decide(similarity, inliers, colour, alignment, overlay)
        if same or homography is None or alignment is None:
            return same, why, alignment
        second = self._refined(query, other, homography, points, alignment, pair, print_check,
                               overlay)
        return (same, why, alignment) if second is None else (True, second[1], second[0])

    def _refined(self, query: PhotoFeatures, other: PhotoFeatures,
                 homography: NDArray[np.float64], points: NDArray[np.float32],
                 alignment: Alignment, pair: tuple[float, int, float], print_check: bool,
                 overlay: Overlay) -> tuple[Alignment, str] | None:
        """A second look at a pair the rule refused although its keypoints agree
        (``inliers >= rule.min_inliers``) and most of its aligned pixels agree in colour
        (the 75th percentile of the colour shift within ``rule.max_colour_shift``: a mapping
        a pixel off moves the shift along the outlines, the high percentiles, while another
        colour moves all of it; luma's other colours are the same photo recoloured, and
        skip the cost), and not within a family of look-alikes (``print_check``: another
        line of one pack layout, aligned to the pixel, passes where only its name differs;
        same-item-packs-copies lost 0.02 of precision): the mapping refined on the grey levels
        (:func:`refine_homography`), the photos aligned again and the rule asked again.
        Returns (the refined alignment, why) when the rule accepts it and the photos
        correlate better than before; otherwise None and the refusal stands. ``pair``:
        (similarity, inliers, colour agreement)."""
        similarity, inliers, colour = pair
        if (print_check or inliers < self.rule.min_inliers or not alignment.by_keypoints
                or alignment.colour_shift(75) > self.rule.max_colour_shift):
            return None
        refined = refine_homography(query, other, homography)
        again = align(query, other, refined, points, print_check) if refined is not None else None
        if again is None or again.correlation <= alignment.correlation:
            return None
        same, why = self.rule.decide(similarity, inliers, colour, again, overlay)
        if not (same and self.rule.agrees_refined(again)):
            return None
        return again, f"{why}; alignment refined"

    def verify(self, query: PhotoFeatures, candidates: Sequence[tuple[str, float]],
               matched: Sequence[KeypointMatch | None] | None = None,
               print_check: bool = False, overlay: Overlay = "open") -> list[Evidence]:
        """One :class:`Evidence` per ``(image_ref, similarity)`` candidate, in order.

        A candidate whose photo cannot be loaded is refused, with the error as its reason.
        At most ``rule.max_coarse`` candidates (the first that qualify: give them most
        similar first) are aligned without keypoints, and at most ``rule.max_mirror`` matched
        mirrored. ``matched``, parallel to ``candidates``: their :meth:`keypoint_matches`,
        when already computed.
        ``print_check``, ``overlay``: see :meth:`compare`.
        """
        out: list[Evidence] = []
        coarse = mirrors = 0
        flipped: list[PhotoFeatures | None] = []

        def mirror() -> PhotoFeatures | None:  # once per query, and only when wanted
            if not flipped:
                flipped.append(mirrored(query))
            return flipped[0]

        for n, (image_ref, similarity) in enumerate(candidates):
            try:
                other = self.gallery_features(image_ref)
            except Exception as exc:  # a gone URL must not sink the whole comparison
                out.append(Evidence(False, similarity, 0, 0.0, None,
                                    f"listing photo unavailable: {type(exc).__name__}: {exc}"))
                continue
            out.append(self.compare(query, other, similarity,
                                    allow_coarse=coarse < self.rule.max_coarse,
                                    matched=None if matched is None else matched[n],
                                    print_check=print_check,
                                    mirror=mirror if mirrors < self.rule.max_mirror else None,
                                    overlay=overlay))
            coarse += out[-1].coarse_tried
            mirrors += out[-1].mirror_tried
        return out

    def keypoint_votes(self, query: PhotoFeatures, image_refs: Sequence[str],
                       unreadable: AbstractSet[str] = frozenset()) -> list[int]:
        """For each listing photo, how many of ``VOTE_FEATURES`` of the query's keypoints find
        a clear nearest descriptor in it (Lowe's ratio, one way, no geometry): a first cut
        ~10x cheaper than :meth:`keypoint_matches` (~0.7 ms a pair with its features cached).
        On same-item-packs (60 queries tried), each of the item's listings ranked 60-200 by
        vector (16) was within the ten of those 140 candidates with the most votes
        (docs/matching.md, "Deeper, by votes"). 0 where the photo cannot be loaded, and for
        the ``unreadable`` refs, which it does not try to load again."""
        if query.descriptors is None or not len(query.descriptors):
            return [0] * len(image_refs)
        step = max(1, len(query.descriptors) // VOTE_FEATURES)
        voters = query.descriptors[::step][:VOTE_FEATURES]
        out: list[int] = []
        for image_ref in image_refs:
            if image_ref in unreadable:
                out.append(0)
                continue
            try:
                other = self.gallery_features(image_ref)
            except Exception:  # refused with its reason if it is ever verified
                out.append(0)
                continue
            if other.descriptors is None or len(other.descriptors) < 2:
                out.append(0)
                continue
            out.append(len(ratio_matches(voters, other.descriptors)))
        return out

    def keypoint_matches(self, query: PhotoFeatures, image_refs: Sequence[str],
                         copies: bool = False) -> list[KeypointMatch | None]:
        """Each listing photo's geometric match with ``query`` (inliers, homography, the
        inliers' positions), the first step of :meth:`verify` alone (~2-5 ms a pair with its
        features cached, a third of a full verification); None where the photo cannot be
        loaded. Price comparison ranks candidates below its first ``k`` by it when those are
        a family of look-alikes (``search/api.py``). ``copies``: the query may show the
        product several times (:func:`ransac`), as an image search's re-ranking asks."""
        out: list[KeypointMatch | None] = []
        for image_ref in image_refs:
            try:
                other = self.gallery_features(image_ref)
            except Exception:  # refused with its reason if it is ever verified
                out.append(None)
                continue
            out.append(ransac(query, other, copies))
        return out
