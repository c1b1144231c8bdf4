import torch

from remap_lib.nn.model import DeepREMAP, IdentityBlock, ModelConfig, ProjectionBlock


def tiny(**kw):
    return ModelConfig(npix=128, stem_channels=4, stage_channels=(4, 8), kernel_size=3, embedding_dim=5,
                       head_bins={"teff": 7, "logg": 5, "feh": 6}, **kw)


def test_shapes_and_normalized_embedding():
    torch.manual_seed(0)
    model = DeepREMAP(tiny()).eval()
    out = model(torch.rand(3, 128))
    assert {k: v.shape for k, v in out["logits"].items()} == {
        "teff": (3, 7), "logg": (3, 5), "feh": (3, 6)}
    assert torch.allclose(out["embedding"].norm(dim=-1), torch.ones(3), atol=1e-6)


def test_projection_block_halves_length_and_changes_channels():
    block = ProjectionBlock(4, 8, 3)
    assert block(torch.rand(2, 4, 10)).shape == (2, 8, 5)
    assert IdentityBlock(8, 3)(torch.rand(2, 8, 5)).shape == (2, 8, 5)


def test_masked_pixels_do_not_matter():
    torch.manual_seed(0)
    model = DeepREMAP(tiny()).eval()
    flux = torch.rand(2, 128)
    mask = torch.zeros(2, 128, dtype=torch.bool)
    mask[:, 40:50] = True
    other = flux.clone()
    other[:, 40:50] = 123.0  # garbage under the mask
    a, b = model(flux, mask), model(other, mask)
    assert torch.allclose(a["logits"]["teff"], b["logits"]["teff"])


def test_regression_head_outputs_one_value_per_label():
    model = DeepREMAP(tiny(head="regression")).eval()
    out = model(torch.rand(4, 128))
    assert all(v.shape == (4,) for v in out["logits"].values())


def test_parameter_count_is_reported():
    model = DeepREMAP(tiny())
    assert model.n_params() == sum(p.numel() for p in model.parameters()) > 0
    assert f"{model.n_params():,} parameters" in model.summary()


def test_config_round_trip():
    config = tiny()
    assert ModelConfig.from_dict(config.to_dict()) == config


def test_inference_twins_give_the_same_outputs():
    """fuse_for_inference and InferenceNet change speed, not numbers (BatchNorm with non-trivial statistics)."""
    from remap_lib.nn.model import InferenceNet, fuse_for_inference

    torch.manual_seed(0)
    model = DeepREMAP(ModelConfig(npix=64, stem_channels=4, stage_channels=(4, 8), kernel_size=3, embedding_dim=4))
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.1, 0.1)
    model.eval()
    flux = 1 + 0.1 * torch.randn(5, 64)
    mask = torch.zeros(5, 64, dtype=torch.bool)
    mask[:, :7] = True
    with torch.no_grad():
        ref = model(flux, mask)
        for twin in (fuse_for_inference(model), InferenceNet(fuse_for_inference(model))):
            out = twin(flux, mask)
            for name in ref["logits"]:
                torch.testing.assert_close(out["logits"][name], ref["logits"][name], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(out["embedding"], ref["embedding"], atol=1e-5, rtol=1e-5)
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in fuse_for_inference(model).modules())
    assert not any(isinstance(m, torch.nn.Conv1d) for m in InferenceNet(model).modules())
