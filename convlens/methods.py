"""Every explanation method, declared once: name, aliases, family, help line and formula.

The CLI's ``--method`` help, :func:`~convlens.lens.cam.targets.parse_methods` (names and
aliases) and the docs read this table; a method added here is known everywhere.  It is plain
data on the ground floor, so the CLI reads it without importing torch.  Names follow
pytorch-grad-cam's classes in lower case (``GradCAMElementWise`` -> ``gradcamelementwise``).

Families (what a method needs, hence how :func:`~convlens.lens.cam.explain` runs it):

``gradient``      activations and one backward of the target score at the CAM layer (shared);
``second-order``  a backward with the graph kept, for a Hessian-vector product (ShapleyCAM);
``contrast``      a backward of a score contrasting the target with its closest classes (FinerCAM);
``activation``    the activations only, class-independent (Eigen-CAM, KPCA-CAM, FEM);
``perturbation``  extra forwards with the input or the layer perturbed;
``network``       gradients through the whole network to the input (FullGrad, guided backprop);
``pixel``         Captum's pixel attributions, on the input;
``attention``     a vision transformer's attention maps (rollout, Chefer et al.).

>>> METHODS["gradcam"].family
'gradient'
>>> ALIASES["grad-cam"]
'gradcam'
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    """One method: its name, the other spellings taken for it, family, one help line, formula."""

    name: str
    family: str
    help: str
    formula: str
    aliases: tuple[str, ...] = ()

    @property
    def at_layer(self) -> bool:
        """Whether its map is computed at the CAM layer (else on the input, biases or attention)."""
        return self.family in ("gradient", "second-order", "contrast", "activation", "perturbation") \
            or self.name == "guidedgradcam"


_TABLE = (
    Method("gradcam", "gradient", "Grad-CAM (Selvaraju et al. 2017)", "ReLU(sum_c mean_ij(dS/dA_c) A_c)",
           ("grad-cam",)),
    Method("gradcam++", "gradient", "Grad-CAM++ (Chattopadhay et al. 2018)",
           "weights sum_ij ReLU(G) G^2 / (2 G^2 + sum(A) G^3)", ("gradcampp", "gradcamplusplus", "grad-cam++")),
    Method("xgradcam", "gradient", "XGrad-CAM (Fu et al. 2020)", "weights sum_ij(G A) / sum_ij(A)", ("xgrad-cam",)),
    Method("hirescam", "gradient", "HiResCAM (Draelos & Carin 2020)", "ReLU(sum_c G_c A_c)", ("hires-cam",)),
    Method("layercam", "gradient", "LayerCAM (Jiang et al. 2021)", "ReLU(sum_c ReLU(G_c) A_c)", ("layer-cam",)),
    Method("gradcamelementwise", "gradient", "Grad-CAM element-wise (pytorch-grad-cam)", "sum_c ReLU(G_c A_c)",
           ("grad-cam-elementwise", "gradcam-elementwise")),
    Method("eigengradcam", "gradient", "Eigen-Grad-CAM: first principal component of G x A, oriented",
           "ReLU(+-PC1(G A)), sign: correlates positively with sum_c G_c A_c", ("eigen-grad-cam",)),
    Method("shapleycam", "second-order", "ShapleyCAM (Cai 2025): gradient minus half the Hessian-vector product",
           "weights mean_ij(G - H A / 2)", ("shapley-cam",)),
    Method("finercam", "contrast", "FinerCAM (Zhang et al. 2025): the target against its 3 closest classes",
           "Grad-CAM of sum_j p_j (S_t - S_j) / sum_j p_j", ("finer-cam",)),
    Method("eigencam", "activation", "Eigen-CAM (Muhammad & Yeasin 2020), oriented",
           "ReLU(+-PC1(A)), sign: correlates positively with sum_c A_c", ("eigen-cam",)),
    Method("kpcacam", "activation", "KPCA-CAM (Karmani et al. 2024): kernel PCA (sigmoid kernel), oriented",
           "ReLU(+-KPC1(A)), sign: correlates positively with sum_c A_c", ("kpca-cam",)),
    Method("fem", "activation", "FEM (Fuad et al. 2020): channels weighted by their share of k-sigma peaks",
           "weights mean_ij[A > mean + 2 std]", ()),
    Method("scorecam", "perturbation", "Score-CAM (Wang et al. 2020)", "weights softmax_c S(x * up(A_c))",
           ("score-cam",)),
    Method("ablationcam", "perturbation", "Ablation-CAM (Desai & Ramaswamy 2020)",
           "weights (S - S(A_c = 0)) / S", ("ablation-cam",)),
    Method("fullgrad", "network", "FullGrad (Srinivas & Fleuret 2019): input and bias gradients of every layer",
           "|x dS/dx| + sum_layers up(|b dS/dz|)", ("full-grad",)),
    Method("guidedbackprop", "network", "Guided backpropagation (Springenberg et al. 2015), |.| max over colours",
           "max_colour |dS/dx| through ReLUs passing only positive gradients", ("guided-backprop", "gbp")),
    Method("guidedgradcam", "network", "Guided Grad-CAM: Grad-CAM x guided backprop, |.| max over colours",
           "max_colour |Grad-CAM x guided backprop|", ("guided-grad-cam",)),
    Method("saliency", "pixel", "Saliency: |gradient| max over colours (Simonyan et al. 2014), Captum",
           "max_colour |dS/dx|", ()),
    Method("smoothgrad", "pixel", "SmoothGrad (Smilkov et al. 2017), Captum", "mean over noisy copies of saliency",
           ("smooth-grad",)),
    Method("ig", "pixel", "Integrated Gradients from a black image (Sundararajan et al. 2017), Captum",
           "sum_colour |(x - x0) integral dS/dx|", ("integratedgradients", "integrated-gradients")),
    Method("occlusion", "pixel", "Occlusion: drop of the score under a grey patch, Captum", "ReLU(S - S(occluded))",
           ()),
    Method("rollout", "attention", "Attention rollout (Abnar & Zuidema 2020), ViT/DeiT",
           "prod_layers (mean_heads(A) + I) / 2, rows renormalised; CLS row over patches",
           ("attention-rollout", "attentionrollout")),
    Method("chefer", "attention", "Gradient-weighted attention (Chefer et al. 2021), ViT/DeiT",
           "R += mean_heads(ReLU(dS/dA A)) R; CLS row over patches",
           ("chefer2021", "transformer-attribution", "gradattention")),
)

#: every method by name, in the order the help lists them
METHODS: dict[str, Method] = {m.name: m for m in _TABLE}
#: every other spelling to its method name
ALIASES: dict[str, str] = {a: m.name for m in _TABLE for a in m.aliases}


def family(*names: str) -> tuple[str, ...]:
    """The method names of the given families, in table order."""
    return tuple(m.name for m in _TABLE if m.family in names)


def help_line() -> str:
    """The method names for a one-line ``--method`` help."""
    return ", ".join(METHODS)
