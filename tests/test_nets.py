"""The network registry: MLP and conv encoders/decoders, their shapes, conditions and errors."""

import pytest
import torch

from pyro_vae.models.nets import NETS, ConvDecoder, ConvEncoder, MLPEncoder, get_net
from pyro_vae.models.vae import VAE


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_conv_encoder_and_decoder_shapes(shape):
    D = shape[0] * shape[1] * shape[2]
    enc = ConvEncoder(shape, hidden_dim=50)
    x = torch.rand(4, D)
    assert enc(x).shape == (4, 50) and enc.out_dim == 50
    assert enc(torch.rand(3, 4, D)).shape == (3, 4, 50)  # leading particle dims
    # the convolutions halve H and W twice: (64, H/4, W/4) features
    assert enc.conv(x.reshape(-1, *shape)).shape == (4, 64, shape[1] // 4, shape[2] // 4)
    for out_per_pixel in (1, 2):
        dec = ConvDecoder(6, shape, hidden_dim=50, out_per_pixel=out_per_pixel)
        assert dec(torch.randn(4, 6)).shape == (4, out_per_pixel * D)
        assert dec(torch.randn(5, 4, 6)).shape == (5, 4, out_per_pixel * D)


def test_conv_decoder_layout_is_parameter_major():
    """Output channel o·C + c is parameter o of colour c: the first D numbers are parameter 0."""
    shape = (3, 8, 8)
    dec = ConvDecoder(2, shape, hidden_dim=16, out_per_pixel=2)
    z = torch.randn(1, 2)
    image = dec.deconv(dec.fc(z).reshape(-1, *dec.grid))  # (1, 6, 8, 8)
    torch.testing.assert_close(dec(z)[0, :192], image[0, :3].flatten())
    torch.testing.assert_close(dec(z)[0, 192:], image[0, 3:].flatten())


@pytest.mark.parametrize("name", list(NETS))
def test_conditions_broadcast_like_enumerated_labels(name):
    """Under enumeration of y the condition is (classes, 1, K) against x (batch, D)."""
    shape = (1, 28, 28)
    enc = NETS[name].encoder(shape, (32,), 10)
    x, c = torch.rand(4, 784), torch.eye(10).reshape(10, 1, 10)
    assert enc(x, c).shape == (10, 4, 32)
    # the same as concatenating the condition row by row
    torch.testing.assert_close(enc(x, c)[3], enc(x, c[3].expand(4, 10)))


def test_mlp_encoder_keeps_its_parameter_names():
    """Old checkpoints load: the unconditional MLP encoder is still net.0.{weight,bias}."""
    assert set(MLPEncoder(784, (400,)).state_dict()) == {"net.0.0.weight", "net.0.0.bias"}


def test_conv_needs_image_sides_divisible_by_four():
    with pytest.raises(ValueError, match=r"H and W divisible by 4 .* got \(1, 30, 30\); use --net mlp"):
        ConvEncoder((1, 30, 30))
    with pytest.raises(ValueError, match=r"got \(784,\); use --net mlp"):
        VAE(784, 4, net="conv")
    with pytest.raises(ValueError, match="unknown net 'resnet'; choose one of mlp, conv"):
        get_net("resnet")


def test_conv_vae_samples_images():
    vae = VAE(3072, 4, (32,), likelihood="gaussian", net="conv", image_shape=(3, 32, 32))
    assert vae.sample(2).shape == (2, 3072) and vae.reconstruct(torch.rand(2, 3072)).shape == (2, 3072)
