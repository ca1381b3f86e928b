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
  photo and the matching are :mod:`search.features`, what two aligned photos show is
  :mod:`search.alignment`; this module decides.
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

import functools
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace
from typing import Literal, ParamSpec, TypeVar

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from embedding.decode import decode_image
from ingest.fetch import ImageFetcher
from ingest.reindex import stored_image
from search.alignment import Alignment, Cover, ShadedLight, align
from search.cancel import Cancelled, stop_if
from search.features import (
    KeypointMatch,
    PhotoFeatures,
    SilhouetteAgreement,
    coarse_homography,
    mirrored,
    one_cv_thread,
    photo_features,
    ransac,
    ratio_passed,
    refine_homography,
    silhouette_agreement,
    unmirror,
)
from search.scene import VERIFY_SIZE

VOTE_FEATURES = 100
"""Query keypoints (evenly spread through its list) whose descriptors vote for a listing
photo in :meth:`SameItemVerifier.keypoint_votes`."""
CACHE_SIZE = 2048
"""Gallery photos whose features are kept: ~160 KB each on luma's photos, mostly their SIFT
descriptors, and ~20 KB more once compared (:attr:`PhotoFeatures.foreground`)."""
VERSIONS_KEPT = 4
"""Stored versions remembered per cached photo (``VERSIONS_KEPT * CACHE_SIZE`` references,
~100 bytes each): a search reads more rows than it verifies."""
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
COARSE_REFINE_REACH = 0.05
"""A keypoint-free alignment is refined only when it falls short of the rule's limits and
its correlation is within this of ``SameItemRule.coarse_correlation``: refining raised a
plain copy's by 0.01-0.03, and costs ~30 ms a pair (Fashion-MNIST look-alikes, ~3 a query,
are far below)."""
GalleryLoader = Callable[[str], Image.Image]
"""``image_ref`` -> the stored listing's photo; raises with a reason when it cannot."""


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
    or so without the pixels a highlight whitens, at most ``max_highlight_share`` of them
    (:meth:`_agrees_around_highlights`),
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
    max_highlight_share: float = 0.1
    """The light route around highlights (:meth:`_agrees_around_highlights`): most of the
    compared pixels a highlight may whiten (:attr:`Alignment.light_around_highlights`,
    with its margin), in any number of patches. A highlight covers a small part of a
    product (2-12 % on same-item-glare's right pairs); over more, only the
    ``max_highlight_blob_share`` tier's specular ones. Luma's black garments made grey on
    one model read 0.19 with a core of 0.56-0.63, within that tier: the recoloured-part
    check, asked before this route, is what refuses them (docs/matching.md, "Highlight
    round", "Highlight round, the print and the correlation beneath" and "Highlights in
    many patches", what it gives up)."""
    max_highlight_blob_share: float = 0.2
    """The same share where the whitened pixels' core is a specular highlight's
    (``min_highlight_core``): a lamp's reflection on a glossy surface may whiten more (up to
    19 % on same-item-glare's right pairs). In any number of patches: a highlight's rim and
    the specks beside it break into 7-14 patches on same-item-packs-glare's right pairs.
    Another line's missing letters, which whiten many small ones, are left to the route's
    other limits (nothing left out darker in the query, the print beneath and around):
    same-item-packs and -packs-glare list none (docs/matching.md, "Highlights in many
    patches")."""
    min_highlight_core: float = 0.5
    """For the ``max_highlight_blob_share`` tier: the whitened pixels' core
    (:attr:`AroundHighlights.core`, the 90th percentile of their share of the way to white)
    must be a specular highlight's: 0.58-1.0 on the right pairs of same-item-glare and
    -packs-glare so accepted, while a lavender hoodie against its white variant read 0.37
    (same-item-mirrored, over 11 % of the model's photo) and a lamp's soft glare 0.15-0.23
    (same-item-relit)."""
    min_highlight_correlation: float = 0.55
    """The correlation as aligned, over the whole, a pair needs before the route around
    highlights computes them (a cheap floor; right pairs of same-item-glare read 0.58 and
    more)."""
    min_highlight_lift: float = 15.0
    """For a pair whose print differs, the route around highlights is asked only where a
    cell of the print check that fails is this much brighter in the query (mean grey level,
    over the photos' brightness ratio; ``Alignment.print_cells``): a highlight fading the
    print lifts a cell by 20-60, another line's name or a misaligned print by 5 at most (on
    the drawn packs of tests/test_verify.py). A cheap gate, not a guard: under a highlight
    every other line of the layout passes it, and so does a word missing from a pale label
    or a white sticker; the route's own limits refuse those."""
    min_print_beneath: float = 0.2
    """Where the route reaches past its first version, the print the pixels left out cover
    must show through them (:attr:`AroundHighlights.beneath`, the print check on the grey
    levels' detail): a highlight fades it, so it still correlates, a word, a badge or a name
    missing from the query does not (a name: 0.03). For a pair whose print differs over the
    whole it must be read (a cell under the pixels left out) and pass."""
    max_highlight_darkened: float = 0.015
    """Most pixels the route may leave out where the query is darker than the listing
    (:attr:`AroundHighlights.darkened`, per whitened pixel), where it reaches past its
    first version (over ``max_highlight_share``, or the correlation as aligned or the print
    read without the highlights): a highlight only brightens (0-0.010 on the right pairs
    so accepted on same-item-glare and -packs-glare), another line's name prints its own
    letters where the listing's are missing (0.016-0.123 on same-item-packs-glare's other
    lines, 0.06-0.10 on the drawn packs of tests/test_verify.py). Within the first version's
    reach a right pair of packs-glare read 0.077 (misaligned letters darken and whiten
    alike), and the print over the whole guards there."""
    min_shaded_correlation: float = 0.99
    """The shaded light route (:class:`ShadedLight`, for a pair the light route refuses):
    grey-level correlation once the shading is divided out. A re-shoot under uneven light
    then correlates 0.99-1.00; another line or brand of one pack layout keeps 0.98-0.99,
    its name and logo unexplained (chosen on same-item-reshoot and -packs, checked on
    same-item-relit and -packs-relit, lit another way; docs/matching.md, "Shaded light
    round"). Above 1: the route is closed."""
    min_shaded_detail_correlation: float = 0.95
    """The shaded light route, for a pair whose grey levels correlate under
    ``min_correlation`` as aligned or under ``min_shaded_correlation`` once the shading is
    divided out: its fine detail inside the product (:attr:`Alignment.detail_correlation`)
    correlating this well, over ``min_shaded_detail_overlap`` of each photo's product, stands
    in for both, the map's other limits holding. A lamp over a product of little contrast
    moves the grey levels more than the product's seams do. Of the pairs the route was asked
    about on nine sets, right pairs so refused read up to 0.99, other items' up to 0.93 (a
    twin listing of MP12, another line of a pack), but for one twin listing of MH12 (0.99) and
    white garments (below); docs/matching.md, "Fine detail under a lamp"."""
    min_shaded_detail_overlap: float = 0.5
    """With ``min_shaded_detail_correlation``: the smallest share of each photo's product that
    the compared region must be (:attr:`Alignment.detail_overlap`). A white garment is
    background on white, and against its grey variant the detail of the model alone agrees
    (0.97, over 0.32 of what the grey variant shows, for luma's MS07); right pairs the fine
    detail frees: 0.67-1.00 but for photos on a backdrop without a product mask."""
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
        colours say, on every route but one: the route around highlights, where a failing
        cell of the print is brighter in the query (a highlight fading the print) and the
        print agrees without the highlights (:meth:`_only_highlights_differ`). Asked first,
        the colour detail is not computed for the others (~90 % of the pairs verified on
        same-item-packs-vivid, a family of one pack layout)."""
        if alignment is not None and self._print_differs(alignment):
            if self._only_highlights_differ(inliers, alignment, overlay):
                return True, self._around_highlights_reason(inliers, alignment)
            return False, (f"{inliers} inliers, but the print differs in places (agreement "
                           f"{alignment.print_agreement:.2f} < {self.min_print_agreement})")
        return self._decide(similarity, inliers, colour, alignment, overlay)

    def _lifted_where_print_differs(self, alignment: Alignment) -> bool:
        """Whether a cell of the print check that fails is brighter in the query by
        ``min_highlight_lift`` (what a highlight over the print does; cheap, from the
        cells)."""
        if alignment.print_cells is None:
            return False
        correlation, counted, _, lift = alignment.print_cells
        failing = counted & (correlation < self.min_print_agreement)
        return bool((lift[failing] >= self.min_highlight_lift).any())

    def _only_highlights_differ(self, inliers: int, alignment: Alignment,
                                overlay: Overlay) -> bool:
        """For a pair whose print differs as a whole: whether a failing cell of the print is
        brighter in the query (:meth:`_lifted_where_print_differs`, from the cells), the
        geometric route's first limits hold (inliers and their span, brightness, no
        recoloured part) and the route around highlights accepts it, the print agreeing
        without the highlights' cells and showing through them. A highlight fades the print
        beneath it (77 right pairs of same-item-glare were refused on the print alone). The
        cheap limits first, the recoloured parts (2-7 ms) last: within a family of one pack
        layout most pairs differ in print, and for those whose failing cells are not lifted
        nothing of the colour detail is computed."""
        return (self._lifted_where_print_differs(alignment) and overlay != "relit"
                and self._geometry_holds(inliers, alignment)
                and self._agrees_around_highlights(alignment)
                and not self._part_recoloured(alignment))

    def _geometry_holds(self, inliers: int, alignment: Alignment) -> bool:
        """The geometric route's first limits, which :meth:`_decide` reads one by one for
        its reasons: keypoints matched (``min_inliers``) and spanning the product
        (``min_inlier_cover``), and neither photo far brighter (``max_brightness_ratio``)."""
        return (alignment.by_keypoints and inliers >= self.min_inliers
                and alignment.inlier_cover >= self.min_inlier_cover
                and _brightness_ratio(alignment) <= self.max_brightness_ratio)

    def _around_highlights_reason(self, inliers: int, alignment: Alignment) -> str:
        """The route around highlights' reason for a pair it accepted."""
        around = alignment.light_around_highlights
        assert around is not None and alignment.light_gains is not None
        gains = "/".join(f"{g:.2f}" for g in alignment.light_gains)
        blobs = "" if around.blobs <= 1 else f" in {around.blobs} patches"
        return (f"{inliers} geometric inliers, aligned photos agree under another light "
                f"around its highlights (correlation {alignment.correlation:.2f}, "
                f"{around.correlation:.3f} and colour shift "
                f"{around.shift(self.shift_percentile):.1f} after channel gains {gains} "
                f"without the {around.share:.0%} of the product a highlight whitens{blobs})")

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
            if not recoloured and self._agrees_around_highlights(alignment):
                return True, self._around_highlights_reason(inliers, alignment)
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
        two listing photos the rule itself refuses it. (A print the route around highlights
        explains is accepted by :meth:`decide` in the first place, so no refused pair's
        differing print is one it explains.)"""
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
        """Whether the print check fails: below ``min_print_agreement`` at its cells, and at
        the second look around covers too, where it had one
        (:attr:`Alignment.covered_print_agreement`). It refuses the pair unless the route
        around highlights explains it (:meth:`_only_highlights_differ`)."""
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

    def _agrees_around_highlights(self, alignment: Alignment) -> bool:
        """The light route around highlights, asked of a pair the light route refused: a
        highlight (a lamp's glare, a glossy pack's specular reflection) hides what lies
        beneath it, so the light route's limits hold over the rest
        (:attr:`Alignment.light_around_highlights`: the pixels the query under the light
        map whitens, the same share of the way in every channel, left out), while they are
        at most ``max_highlight_share`` of the product, or ``max_highlight_blob_share`` where
        their core is a specular highlight's. Under a highlight the colour turns grey and the
        print fades, which lowers the grey-level correlation (0.58-0.96 over the whole,
        0.97-1.00 under the light map without the highlight, on same-item-glare's right
        pairs) and the print agreement, and lifts the colour shift: where the correlation
        as aligned is under ``min_correlation``, or the print check fails, they are read
        again without the highlights and must pass there. Another colour of a part turns
        its hue, which is no blend towards white; a paler part is one, which the
        recoloured-part check, asked first over the whole product, refuses when it reads
        1 % or more (a faint, even one under that, within the shares, is not told from a
        highlight: docs/matching.md, "Highlight round", what is left). Open between two
        listings, unlike the cover and shaded light routes (not measured closed). The rest
        must reach ``min_light_correlation`` even where the print check applies (not
        ``min_segmented_light_correlation``): another line's name missing where the listing
        prints dark letters is a blend towards white too."""
        # the cheap limits first, then the light map (~1 ms), then the highlights' shares,
        # core and darkening (~1 ms); what lies over the rest is computed as it is read
        if alignment.correlation < self.min_highlight_correlation:
            return False
        gains = alignment.light_gains
        if gains is None or min(gains) <= 0 or max(gains) / min(gains) > self.max_light_gain_spread:
            return False
        around = alignment.light_around_highlights
        if (around is None or around.share > self.max_highlight_blob_share
                or (around.share > self.max_highlight_share
                    and around.core < self.min_highlight_core)):
            return False
        if (alignment.correlation < self.min_correlation
                and around.raw_correlation < self.min_correlation):
            return False
        faded = self._print_differs(alignment)
        # Past the first version's reach (a tenth of the product, the grey levels as aligned
        # and the print over the whole agreeing), nothing left out may be darker in the query
        # and the print beneath must show through; a print that differs over the whole must
        # show there (a word or a badge missing from the query is whitened too) and agree
        # without the highlights. The print is read only here (two blurs and print-cell
        # passes), the correlation and the colour shift over the rest last.
        if ((faded or around.share > self.max_highlight_share
             or alignment.correlation < self.min_correlation)
                and (around.darkened > self.max_highlight_darkened
                     or not self._shows_beneath(around.beneath, required=faded))):
            return False
        if faded and not self._print_agrees(around.print_agreement):
            return False
        # The light route's floor without the print check's allowance: a print that differs
        # where the listing has dark letters and the query none reads as whitened, and once
        # left out the print check cannot see it (another line of a pack layout passed so).
        return (around.correlation >= self.min_light_correlation
                and around.shift(self.shift_percentile) <= self.max_light_shift
                and alignment.light_white_unexplained <= self.max_white_unexplained)

    def _print_agrees(self, agreement: float | None) -> bool:
        return agreement is not None and agreement >= self.min_print_agreement

    def _shows_beneath(self, beneath: float | None, required: bool) -> bool:
        """Whether the print beneath the highlights shows through
        (:attr:`AroundHighlights.beneath` at least ``min_print_beneath``); without a cell to
        read, only where not ``required``."""
        return beneath >= self.min_print_beneath if beneath is not None else not required

    def only_colours_differ(self, inliers: int, alignment: Alignment | None) -> bool:
        """Whether a pair's keypoints, brightness, grey levels and print agree and no part of
        it is recoloured, so that only its colours differ: what another light explains.
        Price comparison then asks two listings, one re-shot on a backdrop and the other
        not, of the shaded light route with the re-shot one as the query
        (``overlay="relit"``; ``search.api._compare_listings``)."""
        return (alignment is not None and self._geometry_holds(inliers, alignment)
                and not self._print_differs(alignment)
                and alignment.correlation >= self.min_correlation
                and not self._part_recoloured(alignment))

    def _under_uneven_light(self, inliers: int, shift: float, alignment: Alignment) -> str:
        """The shaded light route's reason for a pair it accepted."""
        shaded = self._shaded_light_explaining(alignment)
        assert shaded is not None
        after = shaded.shift(self.shift_percentile)
        residual = ", and what the map left of it" if shaded.residual else ""
        fine = ("" if shaded.correlation >= self.min_shaded_correlation
                and alignment.correlation >= self.min_correlation else
                f", fine detail {alignment.detail_correlation:.2f}")
        return (f"{inliers} geometric inliers, aligned photos agree under uneven light "
                f"(correlation {alignment.correlation:.2f}, {shaded.correlation:.3f} with the "
                f"shading divided out{residual}{fine}; colour shift {shift:.1f}, {after:.1f} "
                f"after a shaded light map)")

    def _agrees_under_shaded_light(self, alignment: Alignment) -> bool:
        """The shaded light route: a photo re-shot under uneven light (a lamp's fall-off
        across the product, a tone curve) is one smooth map from the listing's, which a
        per-channel map alone leaves unexplained and whose shading lowers the grey-level
        correlation. Asked of a pair the light route refused: with the shading divided out
        (:func:`_shaded_light_map`, by either map of :data:`SHADINGS`), the grey levels
        must correlate to ``min_shaded_correlation`` (or the fine detail, :meth:`_fine`,
        which also stands in for ``min_correlation`` as aligned), a neutral grey stay within
        ``max_light_gain_spread``, the colours agree within ``max_light_shift``, and where
        the listing shows white inside its product the query must show white or its own
        backdrop (``max_shaded_white_unexplained``); and the query must show another
        background around the product (:attr:`ShadedLight.other_background`: re-shot)."""
        if self.min_shaded_correlation > 1 or (  # before the map is fitted
                alignment.correlation < self.min_correlation and not self._fine(alignment)):
            return False
        return self._shaded_light_explaining(alignment) is not None

    def _fine(self, alignment: Alignment) -> bool:
        """Whether the pair's fine detail correlates to ``min_shaded_detail_correlation``
        over ``min_shaded_detail_overlap`` of each photo's product."""
        return (alignment.detail_correlation >= self.min_shaded_detail_correlation
                and alignment.detail_overlap >= self.min_shaded_detail_overlap)

    def _shaded_light_explaining(self, alignment: Alignment) -> ShadedLight | None:
        """The first of the pair's shaded light maps within every limit of the shaded light
        route, or None: each map of :data:`SHADINGS`, then each with what it left of the
        shading divided out (``RESIDUAL_SHADING_SIGMA``, search/alignment.py); where none
        correlates to ``min_shaded_correlation``, the best correlated within the other limits
        when the fine detail correlates (:meth:`_fine`, read only then)."""
        within = [shaded for shaded in alignment.shaded_lights
                  if shaded.other_background
                  and shaded.white_unexplained <= self.max_shaded_white_unexplained
                  and shaded.neutral_spread <= self.max_light_gain_spread
                  and shaded.shift(self.shift_percentile) <= self.max_light_shift]
        found = next((shaded for shaded in within
                      if shaded.correlation >= self.min_shaded_correlation), None)
        if found is None and within and self._fine(alignment):
            return max(within, key=lambda shaded: shaded.correlation)
        return found

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
    shift_percentile: int = field(default=95, kw_only=True)
    """The rule's percentile of the colour shift (``SameItemRule.shift_percentile``), at
    which :attr:`colour_shift` reads the alignment's."""
    coarse_tried: bool = False
    """Whether a keypoint-free alignment was tried (budgeted per query photo)."""
    mirror_tried: bool = False
    """Whether the query was matched mirrored (budgeted per query photo)."""
    via: str | None = None
    """The product id of the accepted listing this one was compared with, instead of the
    query (``search.api._corroborate``)."""

    @property
    def colour_shift(self) -> float | None:
        """The alignment's colour shift at :attr:`shift_percentile` (None without alignment),
        computed when first read (a price match and eval's details read it; a pair refused
        on its print alone is not otherwise asked)."""
        return (None if self.alignment is None
                else self.alignment.colour_shift(self.shift_percentile))


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


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _in_one_cv_thread(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """``method`` run with OpenCV in one thread (:data:`search.features.one_cv_thread`)."""

    @functools.wraps(method)
    def inner(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with one_cv_thread:
            return method(*args, **kwargs)

    return inner


class SameItemVerifier:
    """Decides for retrieved candidates whether each is the query's item, with evidence."""

    def __init__(self, load_gallery: GalleryLoader, rule: SameItemRule | None = None,
                 cache_size: int = CACHE_SIZE) -> None:
        self._load = load_gallery
        self.rule = rule or SameItemRule()
        self._cache: OrderedDict[str, tuple[int | None, PhotoFeatures]] = OrderedDict()
        """``image_ref`` -> (the stored version it was read at, where known; its features)."""
        self._versions: OrderedDict[str, int] = OrderedDict()
        """``image_ref`` -> the stored version the last search read (see :meth:`observe`)."""
        self._cache_size = cache_size
        self._lock = threading.Lock()

    @classmethod
    def for_fetcher(cls, fetcher: ImageFetcher, max_pixels: int,
                    rule: SameItemRule | None = None) -> SameItemVerifier:
        """A verifier reading listing photos through ``fetcher``: build it with
        ``lookalike.app.build_fetcher`` so that the configured roots, egress allow-lists,
        byte cap and deadline apply here as in ingest and reindex."""
        return cls(fetching_loader(fetcher, max_pixels), rule)

    def observe(self, versions: Iterable[tuple[str, int]]) -> None:
        """The stored ``version`` of listing photos, as a search has just read their rows. A
        photo cached at another version (or at none known) is forgotten: a listing re-upserted
        with new content at the same reference (a file replaced, a CDN URL that now serves
        another photo) is then verified by its new photo, as ingest embedded it, not by the
        features read before (a long-lived search process kept accepting the old photo)."""
        with self._lock:
            for image_ref, version in versions:
                self._versions[image_ref] = version
                self._versions.move_to_end(image_ref)
                cached = self._cache.get(image_ref)
                if cached is not None and cached[0] != version:
                    del self._cache[image_ref]
            while len(self._versions) > VERSIONS_KEPT * self._cache_size:
                self._versions.popitem(last=False)

    def gallery_features(self, image_ref: str) -> PhotoFeatures:
        """Features of a stored listing photo, from the cache or loaded and computed."""
        with self._lock:
            found = self._cache.get(image_ref)
            if found is not None:
                self._cache.move_to_end(image_ref)
                return found[1]
            version = self._versions.get(image_ref)
        features = photo_features(self._load(image_ref))
        with self._lock:
            self._cache[image_ref] = (version, features)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return features

    @_in_one_cv_thread
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
            match = ransac(flipped, other, least=self.rule.min_inliers)
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
        return Evidence(same, similarity, inliers, colour, alignment, why, tried,
                        shift_percentile=self.rule.shift_percentile,
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

    @_in_one_cv_thread
    def verify(self, query: PhotoFeatures, candidates: Sequence[tuple[str, float]],
               matched: Sequence[KeypointMatch | None] | None = None,
               print_check: bool = False, overlay: Overlay = "open",
               cancelled: Cancelled | None = None) -> list[Evidence]:
        """One :class:`Evidence` per ``(image_ref, similarity)`` candidate, in order.

        A candidate whose photo cannot be loaded is refused, with the error as its reason.
        At most ``rule.max_coarse`` candidates (the first that qualify: give them most
        similar first) are aligned without keypoints, and at most ``rule.max_mirror`` matched
        mirrored. ``matched``, parallel to ``candidates``: their :meth:`keypoint_matches`,
        when already computed.
        ``print_check``, ``overlay``: see :meth:`compare`. ``cancelled``: asked before each
        candidate; :class:`~search.cancel.SearchCancelled` when the caller is gone.

        Listings that show one photo (another seller re-listing the maker's, under the same
        reference: one cached :class:`PhotoFeatures`) at one similarity are compared once and
        share the evidence, as long as what :meth:`compare` is asked is the same (the budgets
        for coarse and mirrored looks, their keypoint match): the same answer, computed once
        (docs/matching.md, "One photo, several listings").
        """
        out: list[Evidence] = []
        coarse = mirrors = 0
        flipped: list[PhotoFeatures | None] = []
        seen: dict[tuple[int, float, bool, bool, int],
                   tuple[PhotoFeatures, KeypointMatch | None, Evidence]] = {}

        def mirror() -> PhotoFeatures | None:  # once per query, and only when wanted
            if not flipped:
                flipped.append(mirrored(query))
            return flipped[0]

        for n, (image_ref, similarity) in enumerate(candidates):
            stop_if(cancelled, f"verifying candidate {n + 1} of {len(candidates)}")
            try:
                other = self.gallery_features(image_ref)
            except Exception as exc:  # a gone URL must not sink the whole comparison
                out.append(Evidence(False, similarity, 0, 0.0, None,
                                    f"listing photo unavailable: {type(exc).__name__}: {exc}"))
                continue
            allow_coarse, allow_mirror = (coarse < self.rule.max_coarse,
                                          mirrors < self.rule.max_mirror)
            match = None if matched is None else matched[n]
            key = (id(other), similarity, allow_coarse, allow_mirror, id(match))
            if key in seen:  # ``seen`` holds ``other`` and ``match``: their ids stay theirs
                out.append(seen[key][2])
            else:
                out.append(self.compare(query, other, similarity, allow_coarse=allow_coarse,
                                        matched=match, print_check=print_check,
                                        mirror=mirror if allow_mirror else None,
                                        overlay=overlay))
                seen[key] = (other, match, out[-1])
            coarse += out[-1].coarse_tried
            mirrors += out[-1].mirror_tried
        return out

    @_in_one_cv_thread
    def keypoint_votes(self, queries: Sequence[PhotoFeatures], image_refs: Sequence[str],
                       unreadable: AbstractSet[str] = frozenset()) -> list[list[int]]:
        """For each query photo, for each listing photo: how many of ``VOTE_FEATURES`` of the
        query's keypoints find a clear nearest descriptor in it (Lowe's ratio, one way, no
        geometry): a first cut ~10x cheaper than :meth:`keypoint_matches`. On
        same-item-packs (60 queries tried), each of the item's listings ranked 60-200 by
        vector (16) was within the ten of those 140 candidates with the most votes
        (docs/matching.md, "Deeper, by votes"). 0 where the photo cannot be loaded, and for
        the ``unreadable`` refs, which it does not try to load again. The voters of all the
        query photos (the photo, upright where it was saved sideways; a product's stored
        photos) meet each listing photo in one matrix of distances, and a photo several
        listings show is voted on once (3-6 % less CPU beyond a family's first page than one
        query photo at a time: docs/matching.md, "Votes in one product")."""
        voters = [_voters(query) for query in queries]
        rows = np.cumsum([0] + [0 if v is None else len(v) for v in voters])
        out = [[0] * len(image_refs) for _ in queries]
        if not rows[-1]:  # no query photo has keypoints: nothing to load
            return out
        stacked = np.concatenate([v for v in voters if v is not None])
        seen: dict[int, tuple[PhotoFeatures, list[int]]] = {}
        for i, image_ref in enumerate(image_refs):
            if image_ref in unreadable:
                continue
            try:
                other = self.gallery_features(image_ref)
            except Exception:  # refused with its reason if it is ever verified
                continue
            if other.descriptors is None or len(other.descriptors) < 2:
                continue
            if id(other) not in seen:  # ``seen`` holds ``other``: its id stays its
                passed = ratio_passed(stacked, other.descriptors)
                seen[id(other)] = (other, [int(passed[rows[n]:rows[n + 1]].sum())
                                           for n in range(len(queries))])
            for n, count in enumerate(seen[id(other)][1]):
                out[n][i] = count
        return out

    @_in_one_cv_thread
    def keypoint_matches(self, query: PhotoFeatures, image_refs: Sequence[str],
                         copies: bool = False) -> list[KeypointMatch | None]:
        """Each listing photo's geometric match with ``query`` (inliers, homography, the
        inliers' positions), the first step of :meth:`verify` alone (~2-5 ms a pair with its
        features cached, a third of a full verification); None where the photo cannot be
        loaded. Price comparison ranks candidates below its first ``k`` by it when those are
        a family of look-alikes (``search/api.py``). ``copies``: the query may show the
        product several times (:func:`ransac`), as an image search's re-ranking asks. A photo
        several listings show (one reference, one cached :class:`PhotoFeatures`) is matched
        once, and they share the match."""
        out: list[KeypointMatch | None] = []
        seen: dict[int, tuple[PhotoFeatures, KeypointMatch]] = {}
        for image_ref in image_refs:
            try:
                other = self.gallery_features(image_ref)
            except Exception:  # refused with its reason if it is ever verified
                out.append(None)
                continue
            if id(other) not in seen:  # ``seen`` holds ``other``: its id is not reused
                seen[id(other)] = (other, ransac(query, other, copies))
            out.append(seen[id(other)][1])
        return out


def _voters(query: PhotoFeatures) -> NDArray[np.float32] | None:
    """The ``VOTE_FEATURES`` descriptors of ``query`` that vote (evenly spread through its
    list of keypoints); None without descriptors."""
    if query.descriptors is None or not len(query.descriptors):
        return None
    step = max(1, len(query.descriptors) // VOTE_FEATURES)
    return query.descriptors[::step][:VOTE_FEATURES]
