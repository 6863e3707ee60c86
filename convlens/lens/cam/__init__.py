"""Where the network looks: the CAM family and pixel attributions behind one verb.

``explain(model, images, method, target, layer)`` returns one :class:`Explanation` with a
methods axis: ``maps`` ``(M, N, T, H, W)`` in [0, 1] on the model's input grid (kept on the
model's device), the targets (index, label, probability), the layer(s) and the methods.
``ex["gradcam"]`` selects one method (``.heatmaps`` ``(N, T, H, W)``); ``.heatmap(i, t)``
maps a heatmap back onto the original picture through the preprocessing geometry (resize +
centre crop; what the crop cut off is 0); ``.overlay(i, t)`` draws it; ``.figure()`` is the
methods x targets grid; ``.save(dir)`` writes ``.npy`` + ``.png`` files and returns a
:class:`~convlens.render.files.Saved`.  All gradient CAMs of a request share one
forward/backward, captured by :class:`~convlens.probe.Probe`.

Methods (declared once in ``registry``, named after pytorch-grad-cam's classes): gradient CAMs
``gradcam``, ``gradcam++``, ``xgradcam``, ``hirescam``, ``layercam``, ``gradcamelementwise``,
``eigengradcam``, ``shapleycam``, ``finercam``; gradient-free ``eigencam``, ``kpcacam``, ``fem``;
perturbation ``scorecam``, ``ablationcam``; whole-network ``fullgrad``, ``guidedbackprop``,
``guidedgradcam``; pixel attributions via Captum ``saliency``, ``smoothgrad``, ``ig``,
``occlusion``; for vision transformers ``rollout`` and ``chefer``.  Options of every CAM:
``eigen_smooth``, ``aug_smooth``.  Eigen-CAM, Eigen-Grad-CAM and KPCA-CAM fix the sign of their
principal component: the projection correlates positively with the channel sum of what is
projected (the activations; activation x gradient), so the map does not depend on the LAPACK.

Targets: a class (index, label, ``top3``), or a score of :mod:`.objectives`: ``Softmax``,
``Sigmoid``, ``Versus``, ``RawOutput``, ``Segmentation``, ``Embedding`` (strings
``softmax:LABEL``, ``sigmoid``, ``A vs B``, ``raw``, ``seg:LABEL``, ``similar:IMAGE``).

The package: ``registry`` (the methods), ``targets`` (parsing methods and targets),
``objectives`` (the target scores), ``layers`` (the automatic layer), ``capture`` (the forward
with the graph from the target on), ``formulas`` (the maps), ``network`` (FullGrad, guided
backprop), ``result`` (:class:`Explanation`), ``verb`` (:func:`explain`, :func:`predict_explain`).

Example (needs the photo, so not a doctest)::

    import convlens as cl
    model = cl.load_model()
    ex = cl.explain(model, "both.png", target=["bull mastiff", "tabby cat"])
    ex.heatmaps.shape                       # (images, targets, 224, 224)
    # -> torch.Size([1, 2, 224, 224])
    ex.peak(0, 0)                           # (x, y) on the original picture
    ex.overlay(0, 1, cmap="turbo").save("cat.png")
    cl.explain(model, "both.png", method="gradcam,gradcam++,scorecam").save("out/")
"""

from .formulas import CAM_METHODS, GRADIENT_CAMS, normalize_maps, scale_maps, upsample
from .layers import check_layers, default_layer, parse_layers
from .objectives import Embedding, RawOutput, Segmentation, Sigmoid, Softmax, Versus
from .registry import Method
from .result import Explanation
from .targets import METHODS, method_slug, parse_methods, resolve_targets
from .verb import SCORECAM_CHANNELS, explain, predict_explain

__all__ = ["CAM_METHODS", "Embedding", "Explanation", "GRADIENT_CAMS", "METHODS", "Method", "RawOutput",
           "SCORECAM_CHANNELS", "Segmentation", "Sigmoid", "Softmax", "Versus", "check_layers",
           "default_layer", "explain", "method_slug", "normalize_maps", "parse_layers", "parse_methods",
           "predict_explain", "resolve_targets", "scale_maps", "upsample"]
