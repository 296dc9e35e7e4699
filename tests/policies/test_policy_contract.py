"""Contract tests run over every registered policy (and image / transformer variants)."""

from __future__ import annotations

import ast
import inspect
import json
import subprocess
import sys

import pytest
import torch

from robolearn.config import from_dict, to_dict
from robolearn.policies import CheckpointError, FeatureMismatchError, checkpoint_input_features, load_policy
from robolearn.registry import POLICIES
from robolearn.types import ACTION, OBS_STATE, image_key

NAMES = POLICIES.names()


def test_builtin_policies_registered():
    assert {"flow", "diffusion", "mlp"} <= set(NAMES)


def test_package_import_is_light():
    code = (
        "import sys, robolearn.policies, robolearn.policies.checkpoint, robolearn.registry as r; "
        "assert {'flow','diffusion','mlp'} <= set(r.POLICIES.names()); "
        "heavy = [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", NAMES)
def test_config_roundtrip_and_field_docs(name, fakes):
    cls = POLICIES.get(name).config_cls
    cfg = fakes.tiny_config(name)
    assert from_dict(cls, json.loads(json.dumps(to_dict(cfg)))) == cfg
    # Every field of the config (and its bases) carries a docstring right below it.
    for klass in cls.__mro__:
        if klass is object or not hasattr(klass, "__dataclass_fields__"):
            continue
        body = ast.parse(inspect.getsource(klass)).body[0].body
        for stmt, nxt in zip(body, body[1:] + [None], strict=True):
            if isinstance(stmt, ast.AnnAssign):
                has_doc = isinstance(nxt, ast.Expr) and isinstance(getattr(nxt, "value", None), ast.Constant)
                assert has_doc, f"{klass.__name__}.{stmt.target.id} has no docstring"


def test_shapes(variant, fakes):
    name, images, denoiser = variant
    policy = fakes.tiny_policy(name, images, denoiser).eval()
    batch = fakes.make_batch(n=3, images=images)
    obs = fakes.obs_of(batch)
    assert policy.input_features[OBS_STATE] == (fakes.DS,)
    if images:
        assert policy.input_features[image_key("front")] == fakes.IMG
    assert policy.predict_action_chunk(obs).shape == (3, fakes.H, fakes.DA)
    assert policy.predict_action_chunk(obs, num_samples=5).shape == (3, 5, fakes.H, fakes.DA)
    loss, metrics = policy.compute_loss(batch)
    assert loss.dim() == 0 and torch.isfinite(loss) and isinstance(metrics["loss"], float)
    # select_action: one chunk per n_action_steps calls, fed single frames.
    policy.reset()
    calls = []
    original = policy._chunk_from_features
    policy._chunk_from_features = lambda *a, **k: calls.append(1) or original(*a, **k)
    for step in range(2 * fakes.N_EXEC + 1):
        frame = {k: v[:, min(step, fakes.TO - 1)] for k, v in obs.items()}
        assert policy.select_action(frame).shape == (3, fakes.DA)
    assert len(calls) == 3


def _fixed_loss(policy, batch, seeds=(0, 1, 2, 3)) -> float:
    total = 0.0
    with torch.no_grad():
        for s in seeds:
            torch.manual_seed(s)
            total += policy.compute_loss(batch)[0].item()
    return total / len(seeds)


def test_loss_falls(variant, fakes):
    name, images, denoiser = variant
    policy = fakes.tiny_policy(name, images, denoiser)
    batch = fakes.make_batch(n=32, images=images)
    before = _fixed_loss(policy.eval(), batch)
    policy.train()
    opt = torch.optim.Adam(policy.parameters(), lr=1e-2)
    for _ in range(40):
        loss, _ = policy.compute_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = _fixed_loss(policy.eval(), batch)
    assert after < 0.7 * before, (before, after)


def test_save_load_identical(variant, tmp_path, fakes):
    name, images, denoiser = variant
    policy = fakes.tiny_policy(name, images, denoiser).eval()
    folder = policy.save_pretrained(tmp_path / "ckpt")
    files = sorted(p.name for p in folder.iterdir())
    tokenizer = ["tokenizer.json"] if name == "vla" else []  # a VLA's instruction tokenizer
    assert files == sorted(["config.json", "model.safetensors", "norm_stats.json", *tokenizer])
    assert checkpoint_input_features(folder) == {**policy.input_features, ACTION: (fakes.DA,)}
    meta = json.loads((folder / "config.json").read_text())
    assert meta["type"] == name and meta["config"]["action_dim"] == fakes.DA
    loaded = load_policy(folder)
    assert type(loaded) is type(policy) and loaded.config == policy.config
    obs = fakes.obs_of(fakes.make_batch(n=2, images=images, seed=5))
    noise = torch.randn(2, fakes.H, fakes.DA, generator=torch.Generator().manual_seed(0))
    assert torch.equal(
        policy.predict_action_chunk(obs, noise=noise), loaded.predict_action_chunk(obs, noise=noise)
    )
    # the class method on the concrete class works too, and saving over a checkpoint replaces it
    assert type(type(policy).from_pretrained(folder)) is type(policy)
    policy.save_pretrained(folder)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def _break(folder, how):
    if how == "missing_weights":
        (folder / "model.safetensors").unlink()
        return "model.safetensors"
    if how == "truncated_weights":
        data = (folder / "model.safetensors").read_bytes()
        (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
        return "model.safetensors"
    if how == "bad_config_json":
        (folder / "config.json").write_text("{not json")
        return "config.json"
    if how == "missing_stats":
        (folder / "norm_stats.json").unlink()
        return "norm_stats.json"
    if how == "unknown_config_key":
        meta = json.loads((folder / "config.json").read_text())
        meta["config"]["bogus"] = 1
        (folder / "config.json").write_text(json.dumps(meta))
        return "config.json"
    if how == "weights_from_other_config":
        meta = json.loads((folder / "config.json").read_text())
        meta["config"]["obs_encoder"]["state_mlp_dims"] = [8]
        (folder / "config.json").write_text(json.dumps(meta))
        return "model.safetensors"
    raise AssertionError(how)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "how",
    [
        "missing_weights",
        "truncated_weights",
        "bad_config_json",
        "missing_stats",
        "unknown_config_key",
        "weights_from_other_config",
    ],
)
def test_corrupt_checkpoint_names_the_file(name, how, tmp_path, fakes):
    folder = fakes.tiny_policy(name).save_pretrained(tmp_path / "ckpt")
    filename = _break(folder, how)
    with pytest.raises(CheckpointError, match=filename.replace(".", r"\.")):
        load_policy(folder)


def test_missing_checkpoint_folder(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_policy(tmp_path / "nope")


@pytest.mark.parametrize("name", NAMES)
def test_feature_mismatch_errors(name, fakes):
    policy = fakes.tiny_policy(name, images=True).eval()
    good = fakes.features(images=True)
    policy.check_features(good)
    wrong = dict(good)
    wrong[image_key("wrist")] = (12, 12, 3)
    del wrong[OBS_STATE]
    with pytest.raises(FeatureMismatchError) as err:
        policy.check_features(wrong, source="env")
    msg = str(err.value)
    assert "env feature 'observation.images.wrist': expected shape (3, 16, 16), found (3, 12, 12)" in msg
    assert f"'observation.state': expected shape ({fakes.DS},), found missing" in msg
    with pytest.raises(FeatureMismatchError, match=r"'action': expected shape \(3,\), found \(4,\)"):
        policy.check_features({**good, ACTION: (4,)})
    # at run time, a batch with the wrong state size is caught before the network runs
    obs = fakes.obs_of(fakes.make_batch(n=2, images=True))
    obs[OBS_STATE] = torch.zeros(2, fakes.TO, fakes.DS + 1)
    with pytest.raises(FeatureMismatchError, match=r"'observation.state': expected shape \(B, 2, \*\(4,\)\)"):
        policy.predict_action_chunk(obs)


def test_obs_keys_select_and_validate(fakes):
    policy = fakes.tiny_policy("mlp", images=False, obs_keys=(OBS_STATE,))
    assert list(policy.input_features) == [OBS_STATE]
    with pytest.raises(FeatureMismatchError, match="observation.environment_state"):
        fakes.tiny_policy("mlp", obs_keys=(OBS_STATE, "observation.environment_state"))


def test_padded_steps_do_not_count(fakes):
    from robolearn.policies.common.layers import masked_mse

    pred, target = torch.zeros(2, 4, 3), torch.ones(2, 4, 3)
    target[:, -1] = 100.0
    is_pad = torch.zeros(2, 4, dtype=torch.bool)
    is_pad[:, -1] = True
    assert masked_mse(pred, target, is_pad).item() == pytest.approx(1.0)
    # end to end where the prediction does not see the actions (the MLP policy)
    policy = fakes.tiny_policy("mlp").eval()
    batch = fakes.make_batch(n=4)
    batch[f"{ACTION}_is_pad"][:, -3:] = True
    other = {**batch, ACTION: batch[ACTION].clone()}
    other[ACTION][:, -3:] = 1e3
    assert torch.allclose(policy.compute_loss(batch)[0], policy.compute_loss(other)[0])


def test_select_action_matches_window_predictions(fakes):
    policy = fakes.tiny_policy("flow", images=True).eval()
    frames = fakes.make_batch(n=2 * fakes.N_EXEC + 2, images=True, seed=3)  # frame i = sample i's last step
    obs_seq = [
        {k: v[i : i + 1, -1] for k, v in fakes.obs_of(frames).items()} for i in range(2 * fakes.N_EXEC + 2)
    ]
    torch.manual_seed(7)
    got = [policy.select_action(o) for o in obs_seq]
    torch.manual_seed(7)
    expected = []
    for t in (0, fakes.N_EXEC, 2 * fakes.N_EXEC):
        window = {k: torch.stack([obs_seq[max(t - 1, 0)][k], obs_seq[t][k]], dim=1) for k in obs_seq[0]}
        chunk = policy.predict_action_chunk(window)
        expected += list(chunk[:, fakes.TO - 1 : fakes.TO - 1 + fakes.N_EXEC].unbind(1))
    for a, b in zip(got, expected, strict=False):
        assert torch.allclose(a, b, atol=1e-4)
