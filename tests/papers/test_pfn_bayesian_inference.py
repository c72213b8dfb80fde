import numpy as np
import torch
from repro.papers import pfn_bayesian_inference as pfn
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel

PRIOR = dict(lengthscale=0.3, outputscale=1.5, noise=0.05)


def test_gp_posterior_matches_sklearn():
    g = torch.Generator().manual_seed(0)
    x, y = pfn.sample_gp(1, 12, **PRIOR, generator=g)
    xs = torch.linspace(0, 1, 7).view(1, 7, 1)
    mean, var = pfn.gp_posterior(x, y, xs, **PRIOR)
    kernel = ConstantKernel(PRIOR["outputscale"], "fixed") * RBF(PRIOR["lengthscale"], "fixed")
    gp = GaussianProcessRegressor(kernel, alpha=PRIOR["noise"], optimizer=None, normalize_y=False)
    gp.fit(x[0].numpy().astype(float), y[0].numpy().astype(float))
    m, s = gp.predict(xs[0].numpy().astype(float), return_std=True)
    np.testing.assert_allclose(mean[0].numpy(), m, atol=1e-4)
    np.testing.assert_allclose(var[0].numpy(), s ** 2 + PRIOR["noise"], atol=1e-4)  # predictive adds the noise


def test_sample_gp_covariance():
    g = torch.Generator().manual_seed(1)
    x, y = pfn.sample_gp(20000, 2, **PRIOR, generator=g)
    # fix x by conditioning: the empirical variance of y matches outputscale + noise
    assert abs(y.var().item() - (PRIOR["outputscale"] + PRIOR["noise"])) < 0.05


def test_bar_density_integrates_to_one_and_uniform_nll():
    bar = pfn.BarDistribution(torch.tensor([-2.0, -1.0, 0.0, 0.5, 3.0]))
    logits = torch.randn(3, 4)
    grid = torch.linspace(-2, 3, 200001)[:-1] + 2.5e-5
    dens = bar.density(logits, grid)
    np.testing.assert_allclose((dens * 5 / 200000).sum(-1).numpy(), 1.0, atol=1e-3)
    # equal logits -> each bucket has mass 1/4, density 1/(4 width); y = 0.2 lies in bucket [0, 0.5]
    nll = bar.nll(torch.zeros(1, 4), torch.tensor([0.2]))
    assert abs(nll.item() - np.log(4 * 0.5)) < 1e-6
    # mean of a uniform-mass bar distribution is the mean of the bucket centres
    assert abs(bar.mean(torch.zeros(4)).item() - np.mean([-1.5, -0.5, 0.25, 1.75])) < 1e-6
    assert abs(bar.quantile(torch.zeros(4), 0.5).item() - 0.0) < 1e-6


def test_queries_do_not_affect_each_other():
    torch.manual_seed(0)
    model = pfn.PFN(10, d_model=16, n_layers=2, n_heads=2).eval()
    xt, yt = torch.rand(2, 5, 1), torch.randn(2, 5)
    xq = torch.rand(2, 4, 1)
    out1 = model(xt, yt, xq)
    xq2 = xq.clone()
    xq2[:, 1:] = torch.rand(2, 3, 1)
    out2 = model(xt, yt, xq2)
    torch.testing.assert_close(out1[:, 0], out2[:, 0])
    assert not torch.allclose(out1[:, 1:], out2[:, 1:])
    # and the training set does matter
    out3 = model(xt, yt + 1.0, xq)
    assert not torch.allclose(out1, out3)
    # a single query gives the same answer as the same query inside a batch of queries
    torch.testing.assert_close(model(xt, yt, xq[:, :1])[:, 0], out1[:, 0])
