# %% [markdown]
# # 06 · Inside ProbeX
#
# The other notebooks use ProbeX as an estimator: `ProbeXClassifier().fit(bank)`. This one opens
# it. We build a ProbeX by hand, in a few lines of PyTorch, on one layer of the demo jungle:
#
# 1. the four matrices **U, V, M, T**, their shapes, and the probe responses **Z = X U**;
# 2. a short training run of the hand-built ProbeX, and the same numbers from `probex.ProbeX`;
# 3. **Proposition 1**: a linear probing network is as expressive as any dense linear expert
#    $y_k = \sum_{ij} W_{kij} X_{ij}$ (`ProbeXNetwork.from_dense`);
# 4. **Proposition 2**: the linear ProbeX (no activation) *is* a dense linear expert whose weight
#    tensor has a Tucker decomposition $W_{kij} = \sum_{n,l,m} T_{kn} M_{nlm} V_{im} U_{jl}$
#    (`ProbeXNetwork.dense_equivalent`);
# 5. beyond the paper, **multi-view probes** (MVProbe): $X^\top U$ and the Gram views
#    $(X X^\top) U$, $(X^\top X) U$ beside ProbeX's $X U$.
#
# Each proposition is checked numerically on the layer's real weights. The notation is the
# paper's: a layer's weight matrix $X$ is $d_W \times d_H$ (output units x input units).

# %%
import logging
import warnings

import pandas as pd

logging.basicConfig(level=logging.WARNING)
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", message="IProgress not found")
pd.set_option("display.precision", 3)

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from probex import DenseExpert, ProbeX, jungle
from probex.experts.nn import ProbeXNetwork

torch.manual_seed(0)


def difference(a, b):
    """How far two computations of the same numbers are apart: max |a - b| relative to max |b|."""
    return ((a - b).abs().max() / b.abs().max()).item()

# %% [markdown]
# ## 1. One layer of one Model Tree
#
# A classifier tree of the jungle (its models were fine-tuned from one root on 12 of 24
# concepts each) and one of its layers: `conv2.weight`, a convolution whose kernels are
# reshaped to a matrix with the output channels first. `bank.X` stacks that matrix for every
# model: `[N, d_W, d_H]`. The targets are multi-hot: `Y[i, k] = 1` when model `i` was trained on
# concept `k`.

# %%
zoo = jungle.load()
tree = zoo.trees_with_role("classifier")[0]   # cnn-attributes
LAYER = "conv2.weight"
train, test = (zoo.select(tree=tree).bank(LAYER, split=split) for split in ("train", "test"))
X_train, X_test = train.X.float(), test.X.float()   # banks keep the files' dtype (float16 here); by hand we use float32
Y_train, concepts = train.label_matrix()
Y_test, _ = test.label_matrix(concepts)
N, d_W, d_H = X_train.shape
d_Y = len(concepts)
print(f"{tree} / {LAYER}: X of {N} training models, each {d_W} x {d_H}; {d_Y} concepts")

# %% [markdown]
# ## 2. U, V, M, T
#
# - **U** `[d_H, r_U]`: $r_U$ probe vectors $u_l$. A probe response is $z_l = X u_l$ (a vector
#   of $d_W$ numbers): all of them at once, $Z = X U$ `[d_W, r_U]`.
# - **V** `[d_W, r_V]`: one projection shared by every probe, $V^\top z_l$, then an
#   activation $\sigma$ (ReLU).
# - **M** `[r_U, r_V, r_T]`: one encoder $M_l$ per probe; the model's representation is
#   $e = \sum_l M_l\, \sigma(V^\top z_l)$ `[r_T]`.
# - **T** `[r_T, d_Y]`: the head, from the representation to one logit per concept.
#
# Before the probes, $X$ is centred on the training models' mean matrix (in a Model Tree: close
# to the root's weights) and divided by one scalar, so that training does not depend on the
# weights' scale. Neither changes what the network can express: both are affine maps of $X$.

# %%
r_U, r_V, r_T = 16, 8, 32
U = torch.randn(d_H, r_U) / d_H ** 0.5
V = torch.randn(d_W, r_V) / d_W ** 0.5
M = torch.randn(r_U, r_V, r_T) / (r_U * r_V) ** 0.5
T = torch.zeros(r_T, d_Y)
center, scale = X_train.mean(dim=0), (X_train - X_train.mean(dim=0)).std()


def hand_probex(X, U, V, M, T, activation=torch.relu):
    """ProbeX by hand: X [N, d_W, d_H] -> logits [N, d_Y]."""
    Z = ((X - center) / scale) @ U                         # [N, d_W, r_U]: column l is z_l = X u_l
    projected = torch.einsum("nwl,wm->nlm", Z, V)          # [N, r_U, r_V]: V^T z_l for every probe l
    e = torch.einsum("nlm,lmt->nt", activation(projected), M)   # e = sum_l M_l sigma(V^T z_l)
    return e @ T


pd.DataFrame([
    {"matrix": "X (one model)", "shape": (d_W, d_H), "numbers": d_W * d_H},
    {"matrix": "U (probes)", "shape": tuple(U.shape), "numbers": U.numel()},
    {"matrix": "Z = X U (responses)", "shape": (d_W, r_U), "numbers": d_W * r_U},
    {"matrix": "V (shared projection)", "shape": tuple(V.shape), "numbers": V.numel()},
    {"matrix": "M (per-probe encoders)", "shape": tuple(M.shape), "numbers": M.numel()},
    {"matrix": "e (representation)", "shape": (r_T,), "numbers": r_T},
    {"matrix": "T (head)", "shape": tuple(T.shape), "numbers": T.numel()},
]).set_index("matrix")

# %% [markdown]
# What a probe sees: one model's weight matrix $X$ (centred) and its responses $Z = X U$ to the
# 16 probes. The probes are still random here; training turns them into questions whose answers
# tell the concepts apart.

# %%
X0 = ((X_train[0] - center) / scale).numpy()
figure = make_subplots(rows=1, cols=2, column_widths=[0.8, 0.2], subplot_titles=(
    f"X: {train.records[0].id}, centred ({d_W} x {d_H})", f"Z = X U ({d_W} x {r_U})"))
figure.add_trace(go.Heatmap(z=X0, coloraxis="coloraxis"), row=1, col=1)
figure.add_trace(go.Heatmap(z=X0 @ U.numpy(), coloraxis="coloraxis2"), row=1, col=2)
figure.update_layout(coloraxis={"colorscale": "RdBu", "cmid": 0, "showscale": False},
                     coloraxis2={"colorscale": "RdBu", "cmid": 0, "showscale": False},
                     template="plotly_white", height=330)
figure.update_yaxes(autorange="reversed")
figure

# %% [markdown]
# ## 3. Train it
#
# Every concept is one binary output (binary cross-entropy); the score is the mean binary
# accuracy on the tree's test models. Its baselines: chance (0.5) and the best constant
# predictor, which answers for each concept whatever the majority of training models did.

# %%
parameters = [U, V, M, T]
for tensor in parameters:
    tensor.requires_grad_(True)
optimizer = torch.optim.Adam(parameters, lr=1e-2)
losses = []
for step in range(300):
    optimizer.zero_grad()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(hand_probex(X_train, U, V, M, T), Y_train)
    loss.backward()
    optimizer.step()
    losses.append(loss.item())
for tensor in parameters:
    tensor.requires_grad_(False)

with torch.no_grad():
    accuracy = ((hand_probex(X_test, U, V, M, T) > 0).float() == Y_test).float().mean().item()
majority = ((Y_train.mean(dim=0) > 0.5).float() == Y_test).float().mean().item()
pd.Series({"hand-built ProbeX": accuracy, "best constant predictor": majority, "chance": 0.5},
          name="test mean binary accuracy")

# %%
figure = go.Figure(go.Scatter(y=losses, mode="lines"))
figure.update_layout(title="Training the hand-built ProbeX (full batch, Adam)", xaxis_title="step",
                     yaxis_title="binary cross-entropy", template="plotly_white", height=300)
figure

# %% [markdown]
# ## 4. The same network in `probex`
#
# `probex.ProbeX` is this computation as a `torch.nn.Module` (with a bias after V and one after
# M, zero here), and `ProbeXNetwork` adds the head T. Copy the hand-built matrices in and the
# outputs agree to float precision. (`nn.Linear` stores a weight as `[out, in]`: hence the
# transposes; M's three axes become one matrix `[r_T, r_U * r_V]`.)

# %%
network = ProbeXNetwork([(d_W, d_H)], d_Y, n_probes=r_U, proj_dim=r_V, rep_dim=r_T)
with torch.no_grad():
    encoder = network.encoders[0]
    assert isinstance(encoder, ProbeX)
    encoder.normalize.center.copy_(center)
    encoder.normalize.scale.fill_(scale)
    encoder.probes.copy_(U)
    encoder.projection.weight.copy_(V.T)
    encoder.projection.bias.zero_()
    encoder.encoder.weight.copy_(M.permute(2, 0, 1).reshape(r_T, r_U * r_V))
    encoder.encoder.bias.zero_()
    network.head.weight.copy_(T.T)
    network.head.bias.zero_()
    by_hand, by_probex = hand_probex(X_test, U, V, M, T), network([X_test])
checks = {"hand-built ProbeX vs probex.ProbeXNetwork": difference(by_hand, by_probex)}
print(f"relative difference between the two over {len(test)} test models x {d_Y} logits: "
      f"{checks['hand-built ProbeX vs probex.ProbeXNetwork']:.1e}")

# %% [markdown]
# ## 5. Proposition 1: a linear probing network can be any dense expert
#
# The Dense baseline is one linear layer on the flattened weights: $y_k = \sum_{ij} W_{kij}
# X_{ij} + b_k$, one weight per entry of $X$ and output. We train one with `DenseExpert` and
# read its $W$ `[d_Y, d_W, d_H]` and $b$, folding its input normalisation in. The proof of
# Proposition 1 is constructive: with $r_U = d_H$ probes, $r_V = d_W$ and $r_T = d_W d_H$,
# identity U, V and M make the representation $X$ itself, so the head can carry any $W$.
# `ProbeXNetwork.from_dense(W, b)` builds that network; on the test models its logits are the
# dense expert's.

# %%
dense = DenseExpert(epochs=100, patience=20, seed=0).fit(train)
normalize, head = dense.network_.encoders[0].normalize, dense.network_.head
with torch.no_grad():
    W = head.weight.reshape(d_Y, d_W, d_H) / normalize.scale          # y = <W, X> + b on the raw X
    b = head.bias - torch.einsum("kij,ij->k", W, normalize.center)
    as_probex = ProbeXNetwork.from_dense(W, b)
    from_probex = as_probex([X_test])
from_dense = torch.as_tensor(dense.decision_function(test))
checks["Proposition 1: from_dense(W, b) vs the dense expert"] = difference(from_probex, from_dense)
encoder = as_probex.encoders[0]
pd.DataFrame({"r_U": [encoder.n_probes, d_H], "r_V": [encoder.proj_dim, d_W], "r_T": [encoder.rep_dim, d_W * d_H],
              "relative difference of the logits": [checks["Proposition 1: from_dense(W, b) vs the dense expert"], None]},
             index=["linear ProbeX from the dense expert", "what the proof asks for"])

# %% [markdown]
# ## 6. Proposition 2: the linear ProbeX is a Tucker-decomposed dense expert
#
# Without the activation ($\sigma$ = identity), every step from $X$ to the logits is linear, so
# the whole network is one dense linear expert. Its weight tensor is the four matrices
# multiplied together, a Tucker decomposition with core M:
# $W_{kij} = \sum_{n,l,m} T_{kn} M_{nlm} V_{im} U_{jl}$ (our $T$ and $M$ are stored with their
# axes in the order of the computation, so the einsum below reads their indices accordingly).
# `ProbeXNetwork.dense_equivalent()` computes it (folding in the normalisation); we also compute
# it by hand from U, V, M, T.

# %%
linear = ProbeXNetwork([(d_W, d_H)], d_Y, n_probes=r_U, proj_dim=r_V, rep_dim=r_T, activation="none")
linear.load_state_dict(network.state_dict())      # the trained matrices, without the ReLU
with torch.no_grad():
    (W_tucker,), b_tucker = linear.dense_equivalent()
    dense_logits = torch.einsum("kij,nij->nk", W_tucker, X_test) + b_tucker
    W_by_hand = torch.einsum("nk,lmn,im,jl->kij", T, M, V, U) / scale
    by_hand_linear = hand_probex(X_test, U, V, M, T, activation=lambda x: x)
    linear_logits = linear([X_test])
checks["Proposition 2: linear ProbeX vs its dense equivalent"] = difference(linear_logits, dense_logits)
checks["Proposition 2: W by hand vs dense_equivalent"] = difference(W_by_hand, W_tucker)
checks["Proposition 2: hand-built linear ProbeX vs the dense expert"] = difference(by_hand_linear, dense_logits)
tucker_numbers = U.numel() + V.numel() + M.numel() + T.numel()
print(f"the dense tensor W: {W_tucker.numel():,} numbers ({d_Y} x {d_W} x {d_H}); "
      f"its Tucker factors U, V, M, T: {tucker_numbers:,}")

# %% [markdown]
# With the ReLU the network is no longer linear, so no dense tensor reproduces it. A simple
# test: an affine map $f$ takes the mirror image of an input about a point $c$ to the mirror
# image of its output, $f(2c - X) = 2 f(c) - f(X)$. Measured on the test models, with $c$ the
# training models' mean matrix (the ReLU network fails it: $\sigma(-a) \neq -\sigma(a)$):

# %%
def nonlinearity(model):
    """How far model(2 c - X) is from 2 model(c) - model(X), relative to the logits: 0 for an affine model."""
    with torch.no_grad():
        mirrored = model([2 * center - X_test])
        return difference(mirrored, 2 * model([center[None]]) - model([X_test]))


checks["linear ProbeX: departure from linearity"] = nonlinearity(linear)
relu_departure = nonlinearity(network)
print(f"departure from linearity: linear ProbeX {checks['linear ProbeX: departure from linearity']:.1e}, "
      f"ProbeX with ReLU {relu_departure:.2f}")
try:
    network.dense_equivalent()
except ValueError as error:
    print("network.dense_equivalent():", error)

# %% [markdown]
# ## Every check in one table
#
# Each line compares two computations that the paper says are equal: their largest difference,
# relative to the largest value. float32 arithmetic leaves about $10^{-6}$.

# %%
pd.Series(checks, name="relative difference").to_frame()

# %% [markdown]
# ## 7. More than one view: multi-view probes
#
# ProbeX sees a layer through one side only: $Z = X U$. Two different matrices can give the
# same $X U$ (their difference lies in the probes' null space), so MVProbe (ICML 2026, arXiv
# 2605.23410) adds three more views, each with its own probe matrix:
#
# | view | response | probes | points x probes |
# |---|---|---|---|
# | `xu` | $X U_1$ | `[d_H, r_U]` | $d_W \times r_U$ (ProbeX's only view) |
# | `xxtu` | $(X X^\top) U_2$ | `[d_W, r_U]` | $d_W \times r_U$ (the rows' Gram matrix) |
# | `xtu` | $X^\top U_3$ | `[d_W, r_U]` | $d_H \times r_U$ |
# | `xtxu` | $(X^\top X) U_4$ | `[d_H, r_U]` | $d_H \times r_U$ (the columns' Gram matrix) |
#
# Each response is standardised per model over (points, probes): the second-order responses are
# larger by a factor of about $d\,\sigma^2$ and would otherwise drown the first-order ones. Each view
# has its own projection (then ReLU); the views' features are concatenated and one linear encoder
# maps them to the representation. In `probex` this is one argument: `views="all"` (or
# `"first"` = xu + xtu, `"second"` = xxtu + xtxu, or any subset such as `"xu+xtxu"`).
#
# We check the four responses against their formulas on the normalised layer, then train
# single-view and multi-view ProbeX side by side on this layer (a short run).

# %%
from probex import MultiViewProbeX, ProbeXClassifier
from probex.experts.views import VIEWS, view_response

encoder = MultiViewProbeX(d_W, d_H, views="all", n_probes=r_U, proj_dim=r_V, rep_dim=r_T)
encoder.normalize.fit(X_train)
Y = encoder.normalize(X_train[:8])   # (X - C) / s for 8 models
by_formula = {"xu": Y @ encoder.probes["xu"], "xxtu": Y @ Y.transpose(1, 2) @ encoder.probes["xxtu"],
              "xtu": Y.transpose(1, 2) @ encoder.probes["xtu"], "xtxu": Y.transpose(1, 2) @ Y @ encoder.probes["xtxu"]}
with torch.no_grad():
    view_checks = {view: difference(view_response(view, X_train[:8], encoder.normalize, encoder.probes[view]),
                                    by_formula[view]) for view in VIEWS}
pd.DataFrame([{"view": view, "probes U": tuple(encoder.probes[view].shape), "response": tuple(by_formula[view].shape[1:]),
               "difference from the formula": view_checks[view]} for view in VIEWS])

# %%
val = zoo.select(tree=tree).bank(LAYER, split="val")
multiview_scores = {}
for views in ("xu", "all"):
    expert = ProbeXClassifier(views=views, n_probes=r_U, proj_dim=r_V, rep_dim=r_T, epochs=60, patience=20, seed=0)
    expert.fit(train, val=(val, None))
    multiview_scores[views] = expert.score(test)
    print(f"views={views!r}: test mean binary accuracy {multiview_scores[views]:.3f} "
          f"(majority class {majority:.3f}), {expert.n_parameters_:,} parameters")

# %% [markdown]
# Where another view is not a refinement but the only way in: the models of `cnn-own-heads` each
# started their new head from their OWN random initialisation, as fine-tunes on the Hub do. The
# update of the layer the head reads is then about $\sum_c h_c f_c^\top$: a random output-side
# direction $h_c$ per model (the head's row) times a class feature $f_c$ on the input side. Flip or
# rotate $h_c$ and the class is the same, so the class-conditional mean of $X$ is zero and no linear
# read-out of the weights (Dense, or $X U$ without the ReLU) can see the classes. The columns' Gram
# matrix $X^\top X = \sum_c \lVert h_c \rVert^2 f_c f_c^\top + \dots$ drops the random side, and the view `xtxu` reads it;
# the rows' Gram matrix $X X^\top$ (`xxtu`) keeps only the random side. The zoo says so itself: the
# tree's role names `views="xtxu"`, and the sweep, the shipped expert and the app use it.

# %%
from probex.experiments.harness import tree_views
from probex.zoo.extras import recommended_layers

own_tree = next((name for name in zoo.trees_with_role("classifier") if tree_views(zoo, name)), None)
own_heads = {}
if own_tree is None:
    print("this zoo names no tree read through other probe views")
else:
    own_layer = recommended_layers(zoo.root)[own_tree]
    own_train, own_val, own_test = (zoo.select(tree=own_tree).bank(own_layer, split=split) for split in ("train", "val", "test"))
    for name, expert in (("ProbeX (xu)", ProbeXClassifier(epochs=60, patience=20, seed=0)),
                         ("xxtu", ProbeXClassifier(views="xxtu", epochs=60, patience=20, seed=0)),
                         (f"{tree_views(zoo, own_tree)} (the tree's views)", ProbeXClassifier(views=tree_views(zoo, own_tree), epochs=60, patience=20, seed=0)),
                         ("Dense", DenseExpert(epochs=60, patience=20, seed=0))):
        expert.fit(own_train, val=(own_val, None))
        own_heads[name] = {"test mean binary accuracy": expert.score(own_test), "parameters": expert.n_parameters_}
    print(f"{own_tree} / {own_layer}: {len(own_test)} test models")
pd.DataFrame(own_heads).T

# %% [markdown]
# On LoRA layers ($X = s B A$) no view needs the merged matrix: $(X X^\top) U = s^2 B (A A^\top)(B^\top U)$,
# an $r \times r$ product in the middle (plus the centre's terms), so multi-view probes read a
# factored bank as ProbeX does. `probex sweep --views all` and `probex align --views all` train
# them from the command line; `probex report` sets a multi-view column beside ProbeX and ablates
# the view subsets.
