//! `vae`: the classic 784-400-20 MLP variational autoencoder (Kingma & Welling 2014), data in [0, 1].
//!
//! ```text
//! fc1  Linear(784, 400), ReLU -> h
//! fc21 Linear(400, 20) -> mu          fc22 Linear(400, 20) -> logvar
//! z = mu + eps * exp(0.5 * logvar),   eps ~ N(0, I)
//! fc3  Linear(20, 400), ReLU
//! fc4  Linear(400, 784) -> logits
//! loss = BCE-with-logits(logits, x) summed over pixels + KL(q(z|x) || N(0, I)), mean over the batch
//! ```

use crate::graph::{Graph, GraphError, TensorId};
use crate::kernels::activation::Activation;

pub const PIXELS: usize = 784;
pub const HIDDEN: usize = 400;
pub const LATENT: usize = 20;

/// x (N, 784) -> (mu, logvar), each (N, 20).
pub fn encode(g: &mut Graph, x: TensorId) -> Result<(TensorId, TensorId), GraphError> {
    let h = g.linear("fc1", x, HIDDEN)?;
    let h = g.activation(Activation::Relu, h);
    Ok((g.linear("fc21", h, LATENT)?, g.linear("fc22", h, LATENT)?))
}

/// z (N, 20) -> logits (N, 784).
pub fn decode(g: &mut Graph, z: TensorId) -> Result<TensorId, GraphError> {
    let h = g.linear("fc3", z, HIDDEN)?;
    let h = g.activation(Activation::Relu, h);
    g.linear("fc4", h, PIXELS)
}

/// The tensors of the training (and evaluation) graph.
pub struct Objective {
    pub graph: Graph,
    /// (N, 784) in [0, 1]
    pub x: TensorId,
    pub mu: TensorId,
    pub logvar: TensorId,
    pub logits: TensorId,
    /// Reconstruction term: BCE summed over pixels, mean over the batch.
    pub reconstruction: TensorId,
    /// KL term, mean over the batch.
    pub kl: TensorId,
}

/// The negative ELBO of a batch: reconstruction + KL, with eps drawn on the GPU from random stream 0.
pub fn objective(batch: usize) -> Result<Objective, GraphError> {
    let mut g = Graph::new();
    let x = g.input("x", &[batch, PIXELS]);
    let (mu, logvar) = encode(&mut g, x)?;
    let eps = g.normal_noise("eps", &[batch, LATENT], 0);
    let z = g.reparameterize(mu, logvar, eps)?;
    let logits = decode(&mut g, z)?;
    let reconstruction = g.bce_with_logits(logits, x)?;
    let kl = g.gaussian_kl(mu, logvar)?;
    Ok(Objective {
        graph: g,
        x,
        mu,
        logvar,
        logits,
        reconstruction,
        kl,
    })
}

/// Decoding alone: z (N, 20) -> probabilities (N, 784).
pub fn sampler(batch: usize) -> Result<(Graph, TensorId, TensorId), GraphError> {
    let mut g = Graph::new();
    let z = g.input("z", &[batch, LATENT]);
    let logits = decode(&mut g, z)?;
    let probabilities = g.activation(Activation::Sigmoid, logits);
    Ok((g, z, probabilities))
}
