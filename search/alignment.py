"""Two photos of a candidate pair, aligned: what they say about colour, print and light.

:func:`align` warps the query's photo onto the listing's with a mapping (a RANSAC homography of
:func:`search.features.ransac`, or one found without keypoints) and reads, over the product
both photos show, the evidence :class:`Alignment` carries: grey-level correlation, brightness,
the colour shift (as it is, after one per-channel light map, after a shaded light map, or in
hue alone after a shop's colour grading), the part that is recoloured, what a cover (a
sticker, a tag, a label) hides and what the print shows cell by cell. It measures and never
decides: :class:`search.verify.SameItemRule` reads these figures against its limits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cache, cached_property
from typing import Any, TypeVar

import cv2
import numpy as np
from numpy.typing import NDArray

from embedding.colour import foreground_weights
from search.features import PhotoFeatures, in_half_px

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
HIGHLIGHT_WHITENING = 0.1
"""Least share of its way to white, in every channel (within ``WHITEN_MAX_SPREAD`` of each
other), by which the query under the light map must be whitened for a pixel to count as
under a highlight for the light route (:func:`_around_highlights`): a specular highlight's
core is 60-95 % of the way to white and its rim fades to nothing, a lamp's ramp or a white
balance the light map explains leaves a few percent (docs/matching.md, "Highlight round")."""
HIGHLIGHT_MARGIN_PX = 2
"""Pixels (at half ``VERIFY_SIZE``) around those whitened by ``HIGHLIGHT_WHITENING`` left
out with them: the highlight's rim, blurred into the pixels beside it, whitens them by less
and still turns their chroma."""
HIGHLIGHT_DETAIL_SIGMA = 2.0
"""Gaussian sigma (px at half ``VERIFY_SIZE``) of the smooth part taken off both photos' grey
levels before the print beneath a highlight is compared (:attr:`AroundHighlights.beneath`): a
highlight's blend varies smoothly, the print's strokes do not."""
HIGHLIGHT_BENEATH_COVER = 0.2
"""Share of a print cell the pixels left out must cover for :attr:`AroundHighlights.beneath`
to read it: a missing word's letters and their margin cover 20-60 % of a cell."""
HIGHLIGHT_MIN_BLOB_PX = 4
"""Least size (px at half ``VERIFY_SIZE``) of a patch of pixels whitened by
``HIGHLIGHT_WHITENING`` that :attr:`AroundHighlights.blobs` counts: a pixel or two whitened
along a misaligned edge is none."""
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
    mapped_shifts: Callable[[], tuple[float, ...]] = field(repr=False, compare=False)
    """Computes :attr:`shifts` when the rule first reads it."""
    edge_left_out: bool = False
    """Whether the query showed another background around the product, so the band along
    the listing product's outline was left out of the comparison (``EDGE_PX``)."""
    white_unexplained: Callable[[], float] | None = field(default=None, repr=False,
                                                          compare=False)
    """Computes :attr:`Alignment.light_white_unexplained` when the rule first reads it."""
    around_highlights: Callable[[], AroundHighlights | None] | None = field(
        default=None, repr=False, compare=False)
    """Computes :attr:`Alignment.light_around_highlights` when the rule first reads it."""

    @property
    def shifts(self) -> tuple[float, ...]:
        """:attr:`Alignment.colour_shifts` after the map: what no change of light or white
        balance explains (the Lab conversion, ~1.4 ms: not read where the gains alone refuse,
        as on the route around highlights)."""
        return self.mapped_shifts()


@dataclass(frozen=True)
class AroundHighlights:
    """The light route's comparison again without the pixels a highlight hides
    (:func:`_around_highlights`): where the query under the light map is the listing blended
    towards white, the same share of the way in every channel (``HIGHLIGHT_WHITENING`` or
    more), and ``HIGHLIGHT_MARGIN_PX`` around them. A highlight (a lamp's glare, a gloss's
    specular reflection) hides the colour beneath it and turns its chroma towards grey, which
    the colour shift's high percentiles read as another colour and the grey levels as another
    print; another colour of a part turns a hue, or makes it paler where the recoloured-part
    check refuses it first."""

    share: float
    """Share of the compared pixels left out."""
    blobs: int
    """How many separate patches the whitened pixels form (of ``HIGHLIGHT_MIN_BLOB_PX`` or
    more), named in the rule's reason: a lamp's reflection on a glossy surface is one or two
    large ones, with specks beside them and its rim in pieces (7-14 in all on
    same-item-packs-glare); the whitened pixels following a print (another line's letters
    missing) or a misaligned outline form many too. The rule no longer limits them
    (docs/matching.md, "Highlights in many patches")."""
    core: float
    """The 90th percentile of the whitened pixels' share of their way to white: a specular
    highlight's core is 60-95 % of the way (0.58-1.0 on the right pairs of same-item-glare
    and -packs-glare), a lamp's soft glare or a paler shade of a garment far less (0.15-0.37)."""
    raw_correlation: float
    """:attr:`Alignment.correlation` (the grey levels as aligned, not blurred, over the whole
    compared region) without the pixels left out."""
    darkened: float
    """Pixels left out where the listing is the query blended towards white (the query
    darker: ink where the listing shows none), per whitened pixel. A highlight only
    brightens; another line's name, whose missing letters read as whitened, prints its own
    letters beside them."""
    rest_correlation: Callable[[], float] = field(repr=False, compare=False)
    """Computes :attr:`correlation` when the rule first reads it."""
    rest_shifts: Callable[[], tuple[float, ...]] = field(repr=False, compare=False)
    """Computes :attr:`shifts` when the rule first reads it."""
    rest_print: Callable[[], float | None] = field(repr=False, compare=False)
    """Computes :attr:`print_agreement` when the rule first reads it."""
    print_beneath: Callable[[], float | None] = field(repr=False, compare=False)
    """Computes :attr:`beneath` when the rule first reads it."""

    @property
    def correlation(self) -> float:
        """Grey-level correlation of the (blurred) photos over the rest (~0.5 ms)."""
        return self.rest_correlation()

    @property
    def shifts(self) -> tuple[float, ...]:
        """:attr:`LightMap.shifts` over the rest (the Lab conversion, ~1.5 ms)."""
        return self.rest_shifts()

    @property
    def print_agreement(self) -> float | None:
        """:func:`_print_agreement` over the compared region without the pixels left out (a
        cell counts where ``PRINT_CELL_COVER`` of it is left; covers are not set apart here as
        in :attr:`Alignment.print_agreement`; None without a counted cell). Read only for a
        pair whose print differs (a print-cell pass, ~0.5 ms)."""
        return self.rest_print()

    @property
    def beneath(self) -> float | None:
        """The print check over the pixels left out, on the grey levels' detail (the smooth
        part taken off, ``HIGHLIGHT_DETAIL_SIGMA``): under a highlight the print is faded
        (scaled by what the blend leaves of it), not gone; where the query shows nothing of a
        print the listing has (a word, a badge, a whole name missing), it is gone. Over the
        cells the pixels left out cover by ``HIGHLIGHT_BENEATH_COVER`` or more; None without
        such a cell. Read only past the first version's reach (two blurs and a print-cell
        pass, ~0.8 ms)."""
        return self.print_beneath()

    def shift(self, percentile: int) -> float:
        return self.shifts[SHIFT_PERCENTILES.index(percentile)]


@dataclass(frozen=True)
class ShadedLight:
    """The shaded light map fitted from the warped query to the listing
    (:func:`_shaded_light_map`): per channel a tone curve (a power and a gain, fitted on
    log levels) and one smooth shading across the photo (a plane or a second-order surface in
    log light, :data:`SHADINGS`), for a photo re-shot under uneven light, and with
    :attr:`residual` what that map left of the shading smoothed and divided out too; and what
    it leaves unexplained."""

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
    residual: bool = False
    """Whether what the map left of the shading was divided out as well
    (:func:`_residual_shading`: the grey-level ratio of the listing to the mapped query,
    smoothed over ``RESIDUAL_SHADING_SIGMA`` of the photo, one factor for all channels)."""

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
                 shaded: tuple[ShadedLight, ...] = (), white: float = 0.0,
                 fine: tuple[float, float] = (0.0, 0.0)) -> None:
        self._light, self._hue, self._recoloured = light, hue, recoloured
        self._cover, self._shaded, self._white, self._fine = cover, shaded, white, fine

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

    def detail_correlation(self) -> tuple[float, float]:
        """(:attr:`Alignment.detail_correlation`, :attr:`Alignment.detail_overlap`)."""
        return self._fine


@dataclass(frozen=True)
class Alignment:
    """The query photo warped onto the listing's by the homography, compared where both
    show the product."""

    correlation: float
    """Normalised cross-correlation of the grey levels (brightness and contrast edits keep it
    near 1; another product under the same watermark or sale tag does not)."""
    colour_shifts: tuple[float, ...] | Callable[[], tuple[float, ...]]
    """How far the aligned pixels' Lab chroma (a*, b*) moved: its ``SHIFT_PERCENTILES``; or
    what computes them when first read (:func:`align`; read through :meth:`colour_shift`)."""
    inlier_cover: float = 1.0
    """Area of the inliers' convex hull / the listing's product area (1.0 when aligned
    without keypoints)."""
    brightness_ratio: float = 1.0
    """Mean grey level of the warped query / the listing's, over the compared pixels."""
    local_correlation: float | None = None
    """:attr:`correlation` over the inliers' neighbourhoods only (None without inliers)."""
    local_shifts: tuple[float, ...] | Callable[[], tuple[float, ...]] | None = None
    """:attr:`colour_shifts` over the inliers' neighbourhoods only (None without enough of
    them; read through :meth:`local_shift`)."""
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
    print_cells: PrintCells | None = field(default=None, repr=False, compare=False)
    """The print check's cells (:func:`_print_cells`), for the rule's questions about where
    the print differs (None without a print check)."""
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
        """The shaded light maps, one per shading of :data:`SHADINGS`, then each again with
        what it left of the shading divided out (:attr:`ShadedLight.residual`; none without
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
    def detail_correlation(self) -> float:
        """:attr:`correlation` of the photos' fine detail: the grey levels less their blur
        over ``DETAIL_SIGMA_PX`` (:func:`_fine_detail`), compared inside the region, its
        edge's ``DETAIL_EDGE_PX`` left out (0 where too little is left). A lamp's fall-off
        and tone curve over a product of little contrast (a grey bag, a black tight) move
        the grey levels more than its seams and stitching do: they lower
        :attr:`correlation` under 0.85 for re-shoots whose detail still correlates over 0.9
        (same-item-relit)."""
        return self.detail.detail_correlation()[0]

    @property
    def detail_overlap(self) -> float:
        """The compared region's share of each photo's product (the smaller of the two; the
        query's where it lands on the listing's photo): what :attr:`detail_correlation`
        speaks for. A white garment is background on white, so against its grey variant
        the region is the model's face, arms and trousers, whose detail agrees everywhere
        (0.97 for luma's MS07), a third of what the grey variant shows as product."""
        return self.detail.detail_correlation()[1]

    @property
    def light_white_unexplained(self) -> float:
        """:attr:`white_unexplained` with the query under the light map (:class:`LightMap`):
        a white garment re-shot under a warm lamp is explained by the map, a yellow variant
        of it is not (0 without a light map)."""
        light = self.detail.light()
        if light is None or light.white_unexplained is None:
            return 0.0
        return light.white_unexplained()

    @property
    def light_around_highlights(self) -> AroundHighlights | None:
        """The light map's comparison without what a highlight whitens
        (:class:`AroundHighlights`; None without a light map, or when no pixel is so
        whitened, or too few are left)."""
        light = self.detail.light()
        if light is None or light.around_highlights is None:
            return None
        return light.around_highlights()

    @cached_property
    def _shifts(self) -> tuple[tuple[float, ...], tuple[float, ...] | None]:
        """(:attr:`colour_shifts`, :attr:`local_shifts`), computed where :func:`align` left them
        to the first read: a pair refused on its print alone is not asked (~0.6 ms a pair,
        most of a family of look-alikes' pairs)."""
        shifts, local = self.colour_shifts, self.local_shifts
        return (shifts() if callable(shifts) else shifts,
                local() if callable(local) else local)

    def colour_shift(self, percentile: int) -> float:
        return self._shifts[0][SHIFT_PERCENTILES.index(percentile)]

    def light_shift(self, percentile: int) -> float:
        """:meth:`colour_shift` after the light map (infinite without one)."""
        if self.light_shifts is None:
            return float("inf")
        return self.light_shifts[SHIFT_PERCENTILES.index(percentile)]

    def local_shift(self, percentile: int) -> float:
        """:meth:`colour_shift` near the inliers (infinite without them)."""
        local = self._shifts[1]
        if local is None:
            return float("inf")
        return local[SHIFT_PERCENTILES.index(percentile)]


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
    # The shifts are read when asked; until then their closures keep the Lab chroma as
    # bytes (~30 KB a photo at 160 px), not as the float64 pairs (~0.25 MB).
    ab_a, ab_b = _lab_ab(_masked(soft_a, region)), _lab_ab(_masked(soft_b, region))
    shifts = cache(lambda: _chroma_shifts(_chroma_of(ab_a), _chroma_of(ab_b)))
    local_corr: float | None = None
    local_shifts: Callable[[], tuple[float, ...]] | None = None
    share = 1.0
    near: NDArray[np.uint8] | None = None
    if inliers is not None and len(inliers):
        near = np.zeros(region.shape, np.uint8)
        for x, y in (inliers - 0.5) / 2:  # as TO_HALF maps them
            cv2.circle(near, (round(float(x)), round(float(y))), NEAR_INLIER_PX, 1, -1)
        local = (near > 0)[region]  # of the compared pixels, those near an inlier
        share = float(local.mean())
        if int(local.sum()) >= MIN_OVERLAP_PX:
            local_corr = _correlation(region_a[local], region_b[local])
            local_shifts = cache(lambda: _chroma_shifts(_chroma_of(_masked(ab_a, local)),
                                                        _chroma_of(_masked(ab_b, local))))
    pixels = _AlignedPixels(warped, listing, valid, region, fg_b, fg_a, soft_a, soft_b, grey_a,
                            grey_b, near)
    agreement, second_look, coarse = None, None, None
    if segmented or print_check:
        foreign = _foreign(_chroma_of(ab_a), _chroma_of(ab_b), region)
        coarse = _print_cells(grey_a, grey_b, region, PRINT_CELL_PX, foreign, brightness)
        agreement = _print_agreement(coarse)
        if coarse is not None:
            cells = coarse

            def second_look() -> float | None:  # read when the print check fails
                return _print_around_covers(grey_a, grey_b, region, foreign, cells)
    return Alignment(correlation, shifts, cover, brightness, local_corr, local_shifts, share,
                     segmented=segmented,
                     print_agreement=agreement, covered_print=second_look, print_cells=coarse,
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
                a, b = _masked(p.soft_a, relit), _masked(p.soft_b, relit)
                fit = _light_fit(a, b)
                # The gains are read first; what the map leaves is read where they hold.
                mapped = cache(lambda: _mapped(fit, a))

                def white() -> float:  # read when the light route would accept
                    return _white_unexplained_between(p, fit)

                @cache  # the rule may ask twice
                def highlights() -> AroundHighlights | None:  # read when it refuses
                    return _around_highlights(a, b, mapped(), relit, p)
                self._light = LightMap(_gains(fit), cache(lambda: _colour_shifts(mapped(), b)),
                                       edge_left_out, white, highlights)
            self._done.add("light")
        return self._light

    def shaded(self) -> tuple[ShadedLight, ...]:
        if "shaded" not in self._done:
            if self._fit_light:
                p = self._pixels
                relit, other_background = self._colour_region()
                where, listing = _positions(relit), _masked(p.soft_b, relit)
                fits = [_shaded_light_map(_masked(p.soft_a, relit), listing, where, terms)
                        for terms in SHADINGS]
                shaded = [
                    ShadedLight(spread, _colour_shifts(mapped, listing),
                                _correlation(_grey_levels(mapped), _grey_levels(listing)),
                                _white_unexplained(p, coef), other_background)
                    for spread, mapped, coef in fits]
                if RESIDUAL_SHADING_SIGMA > 0:
                    for (spread, mapped, _), fitted in zip(fits, list(shaded), strict=True):
                        smooth = _residual_shading(mapped, listing, relit)
                        shaded.append(ShadedLight(
                            spread, _colour_shifts(smooth, listing),
                            _correlation(_grey_levels(smooth), _grey_levels(listing)),
                            fitted.white_unexplained, residual=True,
                            other_background=other_background))
                self._shaded = tuple(shaded)
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

    def detail_correlation(self) -> tuple[float, float]:
        if "fine" not in self._done:
            p = self._pixels
            inside = cv2.erode(p.region.astype(np.uint8),
                               np.ones((2 * DETAIL_EDGE_PX + 1,) * 2, np.uint8)) > 0
            compared = int(p.region.sum())
            products = max(1, int((p.fg_a & p.valid).sum()), int(p.fg_b.sum()))
            self._fine = (_correlation(_fine_detail(p.grey_a)[inside],
                                       _fine_detail(p.grey_b)[inside])
                          if int(inside.sum()) >= MIN_OVERLAP_PX else 0.0,
                          compared / products)
            self._done.add("fine")
        return self._fine


def _foregrounds(a: PhotoFeatures, b: PhotoFeatures, warped: NDArray[np.uint8],
                 valid: NDArray[np.bool_], h_small: NDArray[np.float64]
                 ) -> tuple[NDArray[np.bool_], NDArray[np.bool_], bool]:
    """(listing foreground, warped query foreground, segmented?). The colour-based
    foregrounds, unless a photo has a segmented product mask (:func:`product_mask`) and the
    two, aligned, outline the same product (intersection over union >=
    ``SEGMENT_MIN_IOU``: GrabCut can keep one panel of a pack only)."""
    fg_b = b.foreground

    def fg_a() -> NDArray[np.bool_]:  # not needed where the query's mask outlines it (~0.4 ms)
        out: NDArray[np.bool_] = foreground_weights(warped) > 0.5
        return out

    if a.product is None and b.product is None:
        return fg_b, fg_a(), False
    seg_b = b.product if b.product is not None else fg_b
    if a.product is not None:
        height, width = b.small.shape[:2]
        seg_a = cv2.warpPerspective(a.product.astype(np.uint8), h_small, (width, height),
                                    flags=cv2.INTER_NEAREST) > 0
    else:
        seg_a = fg_a()
    both, either = int((seg_a & seg_b & valid).sum()), int(((seg_a | seg_b) & valid).sum())
    if either == 0 or both < MIN_OVERLAP_PX or both / either < SEGMENT_MIN_IOU:
        return fg_b, (seg_a if a.product is None else fg_a()), False
    return seg_b, seg_a, True


def _foreign(ab_a: NDArray[np.float64], ab_b: NDArray[np.float64],
             region: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """Where, of ``region``, the query's colour is far from the listing's (``FOREIGN_SHIFT``
    in Lab chroma): a sticker, a tag or a label of its own colour laid over the product."""
    out = np.zeros(region.shape, bool)
    d = ab_a - ab_b
    out[region] = d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1] > FOREIGN_SHIFT * FOREIGN_SHIFT
    return out


PrintCells = tuple[NDArray[np.float64], NDArray[np.bool_], NDArray[np.float64],
                   NDArray[np.float64]]
"""The print check's cells (:func:`_print_cells`): per cell, its correlation, whether it
counts, its share under a cover, how much brighter the query is there (grey levels)."""


def _print_cells(grey_a: NDArray[Any], grey_b: NDArray[Any], region: NDArray[np.bool_],
                 step: int, foreign: NDArray[np.bool_] | None = None, brightness: float = 1.0,
                 cover: float = PRINT_CELL_COVER) -> PrintCells | None:
    """The print check's cells of side ``step``: (the grey-level correlation of the aligned
    photos in each, which cells count: the compared region covers ``cover`` of it
    and the listing shows something there (``PRINT_MIN_STD``: text, a logo, an edge), the
    share of each under ``foreign``, the query's mean grey level divided by ``brightness``
    (the photos' ratio over the whole) less the listing's), or None without a cell."""
    rows, cols = region.shape[0] // step, region.shape[1] // step
    if rows == 0 or cols == 0:
        return None

    def cells(x: NDArray[Any]) -> NDArray[np.float64]:  # (rows, cols, step * step)
        blocks = x[: rows * step, : cols * step].reshape(rows, step, cols, step).swapaxes(1, 2)
        # one copy, converted as laid out cell by cell
        out = np.ascontiguousarray(blocks, dtype=np.float64).reshape(rows, cols, step * step)
        return out

    weight, a, b = cells(region), cells(grey_a), cells(grey_b)
    n = weight.sum(axis=2)
    counted = n >= cover * step * step
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
    return correlation, counted, under, mean_a / brightness - mean_b


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
    correlation, counted, under, _ = cells
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
    correlation, counted, under, _ = fine
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
    pixels_a, pixels_b = _masked(soft_a, inner), _masked(soft_b, inner)
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


def _whitening(a: NDArray[np.uint8], b: NDArray[np.uint8], least: float = WHITEN_MIN_ALPHA
               ) -> tuple[NDArray[np.bool_], NDArray[np.float32]]:
    """Per pixel pair (query ``a``, listing ``b``, (n, 3)): (whether ``a`` is ``b`` blended
    towards white, the share of its way to white it moved, averaged over the channels). Blended
    towards white: moved the same share of the way in every channel (``(a - b) / (255 - b)``
    within ``WHITEN_MAX_SPREAD`` of each other, each at least ``least``): what a glare does,
    and what another hue of a part does not. Channels within 12 of white count their share
    out of 12, so that JPEG noise there is no large share."""
    fa, fb = a.astype(np.float32), b.astype(np.float32)
    r, g, bl = ((fa[:, c] - fb[:, c]) / np.maximum(255.0 - fb[:, c], 12.0) for c in range(3))
    low, high = np.minimum(np.minimum(r, g), bl), np.maximum(np.maximum(r, g), bl)
    whitened = (low >= least) & (high - low <= WHITEN_MAX_SPREAD)
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
    whitened, alpha = _whitening(_masked(soft_a, near), _masked(soft_b, near))
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


def _around_highlights(a: NDArray[np.uint8], b: NDArray[np.uint8], mapped: NDArray[np.uint8],
                       where: NDArray[np.bool_], p: _AlignedPixels) -> AroundHighlights | None:
    """:class:`AroundHighlights` of the light route's pixels (``where``'s: the blurred query
    ``a``, the listing ``b``, ``a`` under the light map ``mapped``; the aligned photos
    ``p``), or None when no pixel is whitened by ``HIGHLIGHT_WHITENING`` or fewer than
    ``MIN_OVERLAP_PX`` are left. The whitening is read after the light map, so that a white
    balance or a brighter exposure, which the map explains, is none. The grey-level
    correlation as aligned and the print check are read again over the whole compared
    region without the pixels left out (a highlight fades the print and lowers the
    correlation beneath it), and the print beneath them on the grey levels' detail. ~1 ms
    a pair for the shares, patches, core, darkening and raw correlation, which refuse most
    pairs; the rest (~3.5 ms in all) is computed when the rule reads it (docs/matching.md,
    "Highlight round, the print and the correlation beneath", "Read when asked"), and only
    for pairs the light route refuses or whose print differs where a highlight may have faded
    it."""
    whitened, alpha = _whitening(mapped, b, HIGHLIGHT_WHITENING)
    if not whitened.any():
        return None
    hidden = np.zeros(where.shape, np.uint8)
    hidden[where] = whitened
    around = cv2.dilate(hidden, np.ones((3, 3), np.uint8), iterations=HIGHLIGHT_MARGIN_PX) > 0
    rest = ~around[where]
    outside = p.region & ~around
    if int(rest.sum()) < MIN_OVERLAP_PX or int(outside.sum()) < MIN_OVERLAP_PX:
        return None
    _, _, stats, _ = cv2.connectedComponentsWithStats(hidden, connectivity=8)
    blobs = int((stats[1:, cv2.CC_STAT_AREA] >= HIGHLIGHT_MIN_BLOB_PX).sum())
    darker, _ = _whitening(b, mapped, HIGHLIGHT_WHITENING)
    darkened = float((darker & ~rest).sum()) / float(whitened.sum())

    @cache
    def rest_print() -> float | None:
        return _print_agreement(_print_cells(p.grey_a, p.grey_b, outside, PRINT_CELL_PX))

    @cache
    def print_beneath() -> float | None:
        detail_a, detail_b = (x.astype(np.float32) - cv2.GaussianBlur(
            x.astype(np.float32), (0, 0), HIGHLIGHT_DETAIL_SIGMA) for x in (p.grey_a, p.grey_b))
        return _print_agreement(_print_cells(detail_a, detail_b, p.region & around,
                                             PRINT_CELL_PX, cover=HIGHLIGHT_BENEATH_COVER))
    return AroundHighlights(
        float(1.0 - rest.mean()), blobs, float(np.percentile(alpha[whitened], 90)),
        _correlation(p.grey_a[outside].astype(np.float64), p.grey_b[outside].astype(np.float64)),
        darkened,
        cache(lambda: _correlation(_grey_levels(_masked(a, rest)), _grey_levels(_masked(b, rest)))),
        cache(lambda: _colour_shifts(_masked(mapped, rest), _masked(b, rest))), rest_print,
        print_beneath)


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
    distance = _row_norm(_lab(_masked(p.soft_a, region)) - _lab(_masked(p.soft_b, region)))
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
    shifts = _chroma_shifts(_lab_chroma(_masked(p.soft_a, rest)),
                            _lab_chroma(_masked(p.soft_b, rest)))
    left = None if patches is None else patches & rest
    blend = None
    if measurable:

        def blend() -> bool:  # read when the rule asks (Cover.translucent)
            return _translucent(_masked(p.soft_a, inner), _masked(p.soft_b, inner))
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
        return _row_norm(bare * gain + offsets - covered)

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
    if not ring.any() or float((_masked(warped, ring).min(axis=1) < WHITE_LEVEL).mean()) < 0.5:
        return region, False
    inner = cv2.distanceTransform((~outside).astype(np.uint8), cv2.DIST_L2, 3) > EDGE_PX
    colours = region & inner
    if int(colours.sum()) < MIN_OVERLAP_PX:
        return region, False
    return colours, True


def outer_background(background: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """The ``background`` pixels connected to the frame: a white panel or stripe inside the
    product is not background for this purpose (also the bench's re-shoot cut-out)."""
    count, labels = cv2.connectedComponents(background.astype(np.uint8), connectivity=4)
    on_frame = np.zeros(count, bool)  # per label: whether it touches the frame
    on_frame[np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])] = True
    on_frame[0] = False  # the label of what is not background
    out: NDArray[np.bool_] = on_frame[labels] & background
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
    return _robust_linear_map(a, b)


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
        return np.stack([_least_squares(_masked(fit_design[c], keep), _masked(fit_b[:, c], keep))
                         for c in range(3)])

    def residual(coef: NDArray[np.float64]) -> NDArray[np.float64]:
        fitted = np.stack([fit_design[c] @ coef[c] for c in range(3)], axis=1)
        return _row_norm(fitted - fit_b)

    coef = _fitted_on_best(len(fit_b), solve, residual)
    greys = np.log1p(np.asarray(NEUTRAL_GREYS))
    outputs = np.expm1(coef[:, :1] * greys[None, :] + coef[:, 1:2])  # (channel, grey)
    spread = float(np.max(outputs.max(axis=0) / np.maximum(outputs.min(axis=0), 1e-3)))
    if not np.isfinite(spread) or outputs.min() <= 0:
        spread = float("inf")
    return spread, _shaded(coef, a, where), coef


RESIDUAL_SHADING_SIGMA = 0.1
"""The shaded light route's last map (:func:`_residual_shading`): what a shaded light map
leaves of the shading is smoothed by a Gaussian of this share of the photo's longer side
(16 px at the 160 px the photos are compared at). Light changes smoothly across a product;
a print, a label or a band ends where it ends, and a smoothing this wide leaves most of
such an edge in the comparison (docs/matching.md, "Residual shading round")."""

DETAIL_SIGMA_PX = 3.0
"""Blur (px at half ``VERIFY_SIZE``) whose removal leaves a photo's fine detail, its seams,
stitching, creases and print edges (:attr:`Alignment.detail_correlation`): a lamp's fall-off
and tone curve move the grey levels over wider spans than that."""
DETAIL_EDGE_PX = 4
"""The band along the compared region's edge (px at half ``VERIFY_SIZE``) that
:attr:`Alignment.detail_correlation` leaves out: at the product's outline the fine detail is
its contrast with the background, which a re-shoot on a backdrop changes (a grey bag's
detail correlates 0.77 with the band, 0.95 without it)."""


def _residual_shading(mapped: NDArray[np.uint8], listing: NDArray[np.uint8],
                      where: NDArray[np.bool_]) -> NDArray[np.uint8]:
    """``mapped`` (the query under a shaded light map, at ``where``'s pixels) with what the
    map left of the light's shading divided out too: the log ratio of the listing's grey
    levels to the mapped query's, smoothed over ``RESIDUAL_SHADING_SIGMA`` of the photo
    (a Gaussian over ``where`` alone), one factor for the three channels (light, not a
    colour). A lamp's light is not one surface: a shade, a reflector or the room add
    their own soft unevenness, which neither the plane nor the second-order surface of
    :data:`SHADINGS` follows; over a plain garment that unevenness is most of what is left
    and lowers the grey-level correlation under the route's floor."""
    ratio = np.zeros(where.shape, np.float64)
    ratio[where] = np.log1p(_grey_levels(listing)) - np.log1p(_grey_levels(mapped))
    sigma = RESIDUAL_SHADING_SIGMA * max(where.shape)
    weight = cv2.GaussianBlur(where.astype(np.float64), (0, 0), sigma)
    field = (cv2.GaussianBlur(ratio, (0, 0), sigma) / np.maximum(weight, 1e-6))[where]
    out: NDArray[np.uint8] = np.clip(
        np.rint((mapped.astype(np.float64) + 1) * np.exp(field)[:, None] - 1), 0, 255
    ).astype(np.uint8)
    return out


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
    to_white = _row_norm(as_white - _lab_chroma(white_side[white]))
    to_backdrop = _row_norm(_lab_chroma(seen) - _lab_chroma(other[ys[nearest], xs[nearest]]))
    unexplained = np.minimum(to_white, to_backdrop) > WHITE_UNEXPLAINED_SHIFT
    return float(unexplained.sum()) / max(1, int(inside.sum()))


def _grey_levels(pixels: NDArray[np.uint8]) -> NDArray[np.float64]:
    """ITU-R 601 luma of (n, 3) RGB pixels, as OpenCV's grey conversion weighs them."""
    return pixels.astype(np.float64) @ np.array([0.299, 0.587, 0.114])  # type: ignore[no-any-return]


def _robust_linear_map(x: NDArray[Any], y: NDArray[Any]
                       ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per column, the gain and offset mapping ``x`` onto ``y`` ((n, k) each), fitted on a
    strided sample of about ``LIGHT_FIT_PIXELS`` rows (:func:`_fitted_on_best`, the distance
    over the k columns): a part of another colour or shade stays unexplained instead of
    bending the fit."""
    step = max(1, len(x) // LIGHT_FIT_PIXELS)  # a strided sample fits as well, at less cost
    fit_x, fit_y = x[::step].astype(np.float64), y[::step].astype(np.float64)

    def solve(keep: NDArray[np.bool_]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        xs, ys = _masked(fit_x, keep), _masked(fit_y, keep)
        mean_x, mean_y = xs.mean(axis=0), ys.mean(axis=0)
        spread = ((xs - mean_x) ** 2).mean(axis=0)
        gains = np.where(spread > 1e-6,
                         ((xs - mean_x) * (ys - mean_y)).mean(axis=0) / np.maximum(spread, 1e-6),
                         1.0)
        return gains, mean_y - gains * mean_x

    def residual(fit: tuple[NDArray[np.float64], NDArray[np.float64]]) -> NDArray[np.float64]:
        gains, offsets = fit
        return _row_norm(fit_x * gains + offsets - fit_y)

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


def _masked(values: NDArray[Any], mask: NDArray[np.bool_]) -> NDArray[Any]:
    """``values[mask]`` (``mask`` a boolean array of ``values``' leading dimensions, values
    with a trailing one: the colours of pixels): the same elements in the same order, taken
    at the mask's flat indices. A boolean index of an (H, W, 3) photo costs 2-5x as much
    (0.15-0.35 ms at 160 px); of a grey one, it is the faster."""
    if mask.shape != values.shape[:mask.ndim]:
        raise IndexError(f"a mask of {mask.shape} for values of {values.shape}")
    rows = values.reshape((mask.size, *values.shape[mask.ndim:]))
    out: NDArray[Any] = np.take(rows, np.flatnonzero(mask), axis=0)
    return out


def _row_norm(rows: NDArray[np.float64]) -> NDArray[np.float64]:
    """``np.linalg.norm(rows, axis=1)`` of (n, 2) or (n, 3) rows, to the bit (the squares
    added in the same order), at a seventh of its cost for two columns: numpy's reduction
    over a short axis is slow."""
    if rows.ndim != 2 or rows.shape[1] not in (2, 3):
        return np.linalg.norm(rows, axis=1)  # type: ignore[no-any-return]
    squares = rows * rows
    total = squares[:, 0] + squares[:, 1]
    if rows.shape[1] == 3:
        total = total + squares[:, 2]
    out: NDArray[np.float64] = np.sqrt(total)
    return out


def _correlation(a: NDArray[np.float64], b: NDArray[np.float64]) -> float:
    """Normalised cross-correlation of two equally long grey-level samples (0 when flat)."""
    a, b = a - a.mean(), b - b.mean()
    denominator = float(np.sqrt((a**2).sum() * (b**2).sum()))
    return float((a * b).sum()) / denominator if denominator > 0 else 0.0


def _fine_detail(grey: NDArray[Any]) -> NDArray[np.float64]:
    """A grey photo less its blur over ``DETAIL_SIGMA_PX``: its fine detail."""
    levels = np.asarray(grey, dtype=np.float64)
    out: NDArray[np.float64] = levels - cv2.GaussianBlur(levels, (0, 0), DETAIL_SIGMA_PX)
    return out


def _lab_chroma(pixels: NDArray[np.uint8]) -> NDArray[np.float64]:
    """(n, 3) RGB pixels -> their (n, 2) Lab chroma (a*, b*), 0 for grey."""
    return _chroma_of(_lab_ab(pixels))


def _lab_ab(pixels: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """(n, 3) RGB pixels -> OpenCV's 8-bit (n, 2) a* and b* (128 for grey)."""
    lab = cv2.cvtColor(pixels.reshape(1, -1, 3), cv2.COLOR_RGB2LAB).reshape(-1, 3)
    return np.ascontiguousarray(lab[:, 1:])


def _chroma_of(ab: NDArray[np.uint8]) -> NDArray[np.float64]:
    """:func:`_lab_ab`'s bytes as the chroma :func:`_lab_chroma` gives (0 for grey)."""
    out: NDArray[np.float64] = ab.astype(np.float64) - 128.0
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
    terms = _grading_terms(_masked(rgb_b, fit)[::step])
    target = _masked(rgb_a, fit)[::step].astype(np.float64)

    def solve(keep: NDArray[np.bool_]) -> NDArray[np.float64]:
        weights = np.linalg.lstsq(_masked(terms, keep).reshape(-1, 4),
                                  _masked(target, keep).reshape(-1),
                                  rcond=None)[0]
        return np.asarray(weights, dtype=np.float64)

    def residual(weights: NDArray[np.float64]) -> NDArray[np.float64]:
        return _row_norm(terms @ weights - target)

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
    a, b = _masked(soft_a, region), _masked(soft_b, region)
    weights = _fit_grading(a, b, _near_clipping(warped, listing)[region])
    return _hue_agreement(a, b, _masked(_graded(listing, weights), region))


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
    chroma_a, chroma_b = _row_norm(ab_a), _row_norm(ab_b)
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
    distance = _row_norm(ab_a - gain * ab_b)
    return tuple(float(v) for v in np.percentile(distance, SHIFT_PERCENTILES))
