//! The networks `train` can build, split into a convolutional `features` part (the last
//! feature map, what Grad-CAM needs) and a `head` (global average pool, dropout where
//! torchvision has it, linear); loading of pretrained weights; freezing of the backbone.
//! Compiled into `pipe-torch` only.
//!
//! | architecture      | feature map (C, side)      | head prefix    | head dropout | min side |
//! |-------------------|----------------------------|----------------|--------------|----------|
//! | `tiny`            | 64, S/8                    | `head`         | –            | 8        |
//! | `resnet50`        | 2048, ≈S/32 (`layer4`)     | `fc`           | –            | 1        |
//! | `densenet121`     | 1024, S/32 (relu(`norm5`)) | `classifier`   | –            | 29       |
//! | `inception_v3`    | 2048, ⌊(S−75)/32⌋+1 (`Mixed_7c`) | `fc`     | 0.5          | 75       |
//! | `efficientnet_b2` | 1408, S/32 (`features.8`)  | `classifier.1` | 0.3          | 1        |
//!
//! Input is always `[N, 1, S, S]` grey levels in [0, 1]. `tiny` uses it as it is. The
//! ImageNet architectures repeat it to 3 channels and normalise it inside `features`
//! the way their torchvision weights expect: ImageNet mean/std for resnet50,
//! densenet121 and efficientnet_b2; `(x − 0.5) / 0.5` for inception_v3, which is what
//! torchvision's `transform_input=True` (set whenever its ImageNet weights are used)
//! turns ImageNet-normalised input into. A 3-channel input is normalised without the
//! repeat.
//!
//! The ImageNet architectures are ports of tch 0.24's `tch::vision::{resnet::resnet50,
//! densenet::densenet121, inception::v3, efficientnet::b2}` (tch-rs, © Laurent Mazare,
//! MIT or Apache-2.0), with their variable names kept exactly: they are torchvision's
//! `state_dict()` keys, so a torchvision model's weights saved by name (safetensors or
//! tch's `.ot`) load with [`load_pretrained`]. Changes from the tch versions:
//! - split before the global pooling; DenseNet pools adaptively (tch's fixed 7×7 average
//!   pool assumed 224-pixel input);
//! - efficientnet_b2 follows torchvision rather than tch where they differ: symmetric
//!   `(k−1)/2` padding instead of TensorFlow "same" padding (which shifts stride-2 maps
//!   by a pixel against torchvision's weights), BatchNorm eps 1e-5 / momentum 0.1
//!   (torchvision's b0–b4; tch used the TensorFlow 1e-3 / 0.01), stochastic depth
//!   (row mode, 0.2 × block index / blocks, in training only) and dropout 0.3 before
//!   `classifier.1`;
//! - inception_v3 has no auxiliary classifier (torchvision's `AuxLogits.*` tensors are
//!   reported as unexpected when loading).
//!
//! BatchNorm uses tch's defaults otherwise (weights initialised uniform in [0, 1]).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context as _, bail};
use tch::Tensor;
use tch::nn::{self, ModuleT};

/// Every architecture [`build`] knows, as `params.architecture` names them (the list
/// params are validated against, without LibTorch).
pub use pipe_cxr::train::ARCHITECTURES;

/// ImageNet mean and standard deviation of the RGB channels (torchvision's).
const IMAGENET_MEAN: [f64; 3] = [0.485, 0.456, 0.406];
const IMAGENET_STD: [f64; 3] = [0.229, 0.224, 0.225];

/// How `features` prepares the `[N, 1, S, S]` input.
#[derive(Debug, Clone, Copy)]
enum Input {
    /// Used as it is (`tiny`).
    Grey,
    /// Repeated to 3 channels, then `(x − mean) / std` per channel.
    Rgb { mean: [f64; 3], std: [f64; 3] },
}

/// A network: `features` then `head`. Its variables live in the `nn::Path` given to
/// [`build`].
#[derive(Debug)]
pub struct Net {
    arch: &'static str,
    input: Input,
    features: Box<dyn ModuleT>,
    fc: nn::Linear,
    dropout: f64,
    head_prefix: &'static str,
    min_size: i64,
    channels: i64,
}

/// Builds architecture `arch` (one of [`ARCHITECTURES`]) with `classes` outputs under `p`.
pub fn build(arch: &str, p: &nn::Path, classes: i64) -> anyhow::Result<Net> {
    anyhow::ensure!(classes >= 1, "a network needs at least one class, got {classes}");
    let imagenet = Input::Rgb {
        mean: IMAGENET_MEAN,
        std: IMAGENET_STD,
    };
    let spec = |arch, input, features: Box<dyn ModuleT>, channels, head_prefix, dropout, min_size| Spec {
        arch,
        input,
        features,
        channels,
        head_prefix,
        dropout,
        min_size,
    };
    let s = match arch {
        "tiny" => spec("tiny", Input::Grey, Box::new(tiny_features(p)), 64, "head", 0.0, 8),
        "resnet50" => spec("resnet50", imagenet, Box::new(resnet50_features(p)), 2048, "fc", 0.0, 1),
        "densenet121" => spec(
            "densenet121",
            imagenet,
            Box::new(densenet121_features(p)),
            1024,
            "classifier",
            0.0,
            29,
        ),
        "inception_v3" => spec(
            "inception_v3",
            // torchvision's transform_input=True applied to ImageNet-normalised input.
            Input::Rgb {
                mean: [0.5; 3],
                std: [0.5; 3],
            },
            Box::new(inception_v3_features(p)),
            2048,
            "fc",
            0.5,
            75,
        ),
        "efficientnet_b2" => spec(
            "efficientnet_b2",
            imagenet,
            Box::new(EfficientNetFeatures::b2(p)),
            1408,
            "classifier.1",
            0.3,
            1,
        ),
        other => bail!("unknown architecture `{other}`; known: {}", ARCHITECTURES.join(", ")),
    };
    let mut parts = s.head_prefix.split('.');
    let mut head_path = p / parts.next().expect("a head prefix");
    for part in parts {
        head_path = &head_path / part;
    }
    let fc = nn::linear(head_path, s.channels, classes, Default::default());
    Ok(Net {
        arch: s.arch,
        input: s.input,
        features: s.features,
        fc,
        dropout: s.dropout,
        head_prefix: s.head_prefix,
        min_size: s.min_size,
        channels: s.channels,
    })
}

/// What distinguishes the architectures, before the head is built.
struct Spec {
    arch: &'static str,
    input: Input,
    features: Box<dyn ModuleT>,
    channels: i64,
    head_prefix: &'static str,
    dropout: f64,
    min_size: i64,
}

impl Net {
    /// The architecture's name, as in [`ARCHITECTURES`].
    pub fn arch(&self) -> &'static str {
        self.arch
    }

    /// `xs`: `[N, 1, S, S]` grey levels in [0, 1] (or `[N, 3, S, S]`, for the ImageNet
    /// architectures). Returns the last convolutional feature map `[N, C, h, w]`, after
    /// its activation (see the table in the module documentation). With `train` false,
    /// BatchNorm uses its running statistics and does not update them.
    pub fn features(&self, xs: &Tensor, train: bool) -> Tensor {
        let xs = match self.input {
            Input::Grey => xs.shallow_clone(),
            Input::Rgb { mean, std } => {
                let opts = (xs.kind(), xs.device());
                let mean = Tensor::from_slice(&mean)
                    .to_kind(opts.0)
                    .to_device(opts.1)
                    .view([1, 3, 1, 1]);
                let std = Tensor::from_slice(&std)
                    .to_kind(opts.0)
                    .to_device(opts.1)
                    .view([1, 3, 1, 1]);
                let xs = if xs.size().get(1) == Some(&1) {
                    xs.expand([-1, 3, -1, -1], false)
                } else {
                    xs.shallow_clone()
                };
                (xs - mean) / std
            }
        };
        self.features.forward_t(&xs, train)
    }

    /// Global average pool of a [`Net::features`] map, dropout (in training, where
    /// torchvision has it), linear: logits `[N, classes]`.
    pub fn head(&self, features: &Tensor, train: bool) -> Tensor {
        let pooled = features.adaptive_avg_pool2d([1, 1]).flatten(1, -1);
        let pooled = if self.dropout > 0.0 {
            pooled.dropout(self.dropout, train)
        } else {
            pooled
        };
        pooled.apply(&self.fc)
    }

    /// Var-store name prefix of the final linear layer (its variables are
    /// `{prefix}.weight` and `{prefix}.bias`, relative to the path given to [`build`]).
    pub fn head_prefix(&self) -> &'static str {
        self.head_prefix
    }

    /// Channels of the feature map (the head's input width).
    pub fn channels(&self) -> i64 {
        self.channels
    }

    /// The smallest input side the forward pass works at (every intermediate map at
    /// least 1×1). Training additionally needs more than one value per BatchNorm
    /// channel, i.e. a batch of ≥ 2 when the last map is 1×1.
    pub fn min_size(&self) -> i64 {
        self.min_size
    }
}

impl ModuleT for Net {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.head(&self.features(xs, train), train)
    }
}

// ---------------------------------------------------------------------------------------
// tiny: 3 × (conv 3×3 → batch norm → ReLU → max pool 2×2); the head pools and classifies.
// Same variables, creation order (hence initialisation for a given seed) and computation
// as the network `train` used before this file existed.

fn tiny_features(p: &nn::Path) -> impl ModuleT + use<> {
    let conv = nn::ConvConfig {
        padding: 1,
        bias: false,
        ..Default::default()
    };
    let mut seq = nn::seq_t();
    let mut channels = 1;
    for (i, out) in [16i64, 32, 64].into_iter().enumerate() {
        seq = seq
            .add(nn::conv2d(p / format!("conv{i}"), channels, out, 3, conv))
            .add(nn::batch_norm2d(p / format!("bn{i}"), out, Default::default()))
            .add_fn(|x| x.relu().max_pool2d_default(2));
        channels = out;
    }
    seq
}

// ---------------------------------------------------------------------------------------
// ResNet-50 (He et al. 2015), from tch::vision::resnet.

fn conv2d(p: nn::Path, c_in: i64, c_out: i64, ksize: i64, padding: i64, stride: i64) -> nn::Conv2D {
    let cfg = nn::ConvConfig {
        stride,
        padding,
        bias: false,
        ..Default::default()
    };
    nn::conv2d(p, c_in, c_out, ksize, cfg)
}

fn downsample(p: nn::Path, c_in: i64, c_out: i64, stride: i64) -> impl ModuleT + use<> {
    if stride != 1 || c_in != c_out {
        nn::seq_t()
            .add(conv2d(&p / "0", c_in, c_out, 1, 0, stride))
            .add(nn::batch_norm2d(&p / "1", c_out, Default::default()))
    } else {
        nn::seq_t()
    }
}

fn bottleneck_block(p: nn::Path, c_in: i64, c_out: i64, stride: i64, e: i64) -> impl ModuleT + use<> {
    let e_dim = e * c_out;
    let conv1 = conv2d(&p / "conv1", c_in, c_out, 1, 0, 1);
    let bn1 = nn::batch_norm2d(&p / "bn1", c_out, Default::default());
    let conv2 = conv2d(&p / "conv2", c_out, c_out, 3, 1, stride);
    let bn2 = nn::batch_norm2d(&p / "bn2", c_out, Default::default());
    let conv3 = conv2d(&p / "conv3", c_out, e_dim, 1, 0, 1);
    let bn3 = nn::batch_norm2d(&p / "bn3", e_dim, Default::default());
    let downsample = downsample(&p / "downsample", c_in, e_dim, stride);
    nn::func_t(move |xs, train| {
        let ys = xs
            .apply(&conv1)
            .apply_t(&bn1, train)
            .relu()
            .apply(&conv2)
            .apply_t(&bn2, train)
            .relu()
            .apply(&conv3)
            .apply_t(&bn3, train);
        (xs.apply_t(&downsample, train) + ys).relu()
    })
}

fn bottleneck_layer(p: nn::Path, c_in: i64, c_out: i64, stride: i64, cnt: i64) -> impl ModuleT + use<> {
    let mut layer = nn::seq_t().add(bottleneck_block(&p / "0", c_in, c_out, stride, 4));
    for block_index in 1..cnt {
        layer = layer.add(bottleneck_block(&p / block_index, 4 * c_out, c_out, 1, 4))
    }
    layer
}

fn resnet50_features(p: &nn::Path) -> impl ModuleT + use<> {
    let conv1 = conv2d(p / "conv1", 3, 64, 7, 3, 2);
    let bn1 = nn::batch_norm2d(p / "bn1", 64, Default::default());
    let layer1 = bottleneck_layer(p / "layer1", 64, 64, 1, 3);
    let layer2 = bottleneck_layer(p / "layer2", 4 * 64, 128, 2, 4);
    let layer3 = bottleneck_layer(p / "layer3", 4 * 128, 256, 2, 6);
    let layer4 = bottleneck_layer(p / "layer4", 4 * 256, 512, 2, 3);
    nn::func_t(move |xs, train| {
        xs.apply(&conv1)
            .apply_t(&bn1, train)
            .relu()
            .max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false)
            .apply_t(&layer1, train)
            .apply_t(&layer2, train)
            .apply_t(&layer3, train)
            .apply_t(&layer4, train)
    })
}

// ---------------------------------------------------------------------------------------
// DenseNet-121 (Huang et al. 2016), from tch::vision::densenet.

fn dense_layer(p: nn::Path, c_in: i64, bn_size: i64, growth: i64) -> impl ModuleT + use<> {
    let c_inter = bn_size * growth;
    let bn1 = nn::batch_norm2d(&p / "norm1", c_in, Default::default());
    let conv1 = conv2d(&p / "conv1", c_in, c_inter, 1, 0, 1);
    let bn2 = nn::batch_norm2d(&p / "norm2", c_inter, Default::default());
    let conv2 = conv2d(&p / "conv2", c_inter, growth, 3, 1, 1);
    nn::func_t(move |xs, train| {
        let ys = xs
            .apply_t(&bn1, train)
            .relu()
            .apply(&conv1)
            .apply_t(&bn2, train)
            .relu()
            .apply(&conv2);
        Tensor::cat(&[xs, &ys], 1)
    })
}

fn dense_block(p: nn::Path, c_in: i64, bn_size: i64, growth: i64, nlayers: i64) -> impl ModuleT + use<> {
    let mut seq = nn::seq_t();
    for i in 0..nlayers {
        seq = seq.add(dense_layer(
            &p / format!("denselayer{}", 1 + i),
            c_in + i * growth,
            bn_size,
            growth,
        ));
    }
    seq
}

fn transition(p: nn::Path, c_in: i64, c_out: i64) -> impl ModuleT + use<> {
    nn::seq_t()
        .add(nn::batch_norm2d(&p / "norm", c_in, Default::default()))
        .add_fn(|xs| xs.relu())
        .add(conv2d(&p / "conv", c_in, c_out, 1, 0, 1))
        .add_fn(|xs| xs.avg_pool2d_default(2))
}

fn densenet121_features(p: &nn::Path) -> impl ModuleT + use<> {
    let (c_in, bn_size, growth, block_config) = (64, 4, 32, [6i64, 12, 24, 16]);
    let fp = p / "features";
    let mut seq = nn::seq_t()
        .add(conv2d(&fp / "conv0", 3, c_in, 7, 3, 2))
        .add(nn::batch_norm2d(&fp / "norm0", c_in, Default::default()))
        .add_fn(|xs| xs.relu().max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false));
    let mut nfeat = c_in;
    for (i, &nlayers) in block_config.iter().enumerate() {
        seq = seq.add(dense_block(
            &fp / format!("denseblock{}", 1 + i),
            nfeat,
            bn_size,
            growth,
            nlayers,
        ));
        nfeat += nlayers * growth;
        if i + 1 != block_config.len() {
            seq = seq.add(transition(&fp / format!("transition{}", 1 + i), nfeat, nfeat / 2));
            nfeat /= 2
        }
    }
    seq.add(nn::batch_norm2d(&fp / "norm5", nfeat, Default::default()))
        .add_fn(|xs| xs.relu())
}

// ---------------------------------------------------------------------------------------
// Inception v3 (Szegedy et al. 2015), from tch::vision::inception.

/// Inception's BasicConv2d: conv (no bias) → batch norm (eps 0.001) → ReLU.
fn conv_bn_nd(p: nn::Path, c_in: i64, c_out: i64, ksize: [i64; 2], pad: [i64; 2], stride: i64) -> impl ModuleT + use<> {
    let conv_cfg = nn::ConvConfigND::<[i64; 2]> {
        stride: [stride, stride],
        padding: pad,
        bias: false,
        ..Default::default()
    };
    let bn_cfg = nn::BatchNormConfig {
        eps: 0.001,
        ..Default::default()
    };
    nn::seq_t()
        .add(nn::conv(&p / "conv", c_in, c_out, ksize, conv_cfg))
        .add(nn::batch_norm2d(&p / "bn", c_out, bn_cfg))
        .add_fn(|xs| xs.relu())
}

fn conv_bn(p: nn::Path, c_in: i64, c_out: i64, ksize: i64, pad: i64, stride: i64) -> impl ModuleT + use<> {
    conv_bn_nd(p, c_in, c_out, [ksize, ksize], [pad, pad], stride)
}

fn conv_bn2(p: nn::Path, c_in: i64, c_out: i64, ksize: [i64; 2], pad: [i64; 2]) -> impl ModuleT + use<> {
    conv_bn_nd(p, c_in, c_out, ksize, pad, 1)
}

fn max_pool3s2(xs: &Tensor) -> Tensor {
    xs.max_pool2d([3, 3], [2, 2], [0, 0], [1, 1], false)
}

/// 3×3 average pool, stride 1, padding 1, counting the padding (PyTorch's default).
fn avg_pool3s1(xs: &Tensor) -> Tensor {
    xs.avg_pool2d([3, 3], [1, 1], [1, 1], false, true, None::<i64>)
}

fn inception_a(p: nn::Path, c_in: i64, c_pool: i64) -> impl ModuleT + use<> {
    let b1 = conv_bn(&p / "branch1x1", c_in, 64, 1, 0, 1);
    let b2_1 = conv_bn(&p / "branch5x5_1", c_in, 48, 1, 0, 1);
    let b2_2 = conv_bn(&p / "branch5x5_2", 48, 64, 5, 2, 1);
    let b3_1 = conv_bn(&p / "branch3x3dbl_1", c_in, 64, 1, 0, 1);
    let b3_2 = conv_bn(&p / "branch3x3dbl_2", 64, 96, 3, 1, 1);
    let b3_3 = conv_bn(&p / "branch3x3dbl_3", 96, 96, 3, 1, 1);
    let bpool = conv_bn(&p / "branch_pool", c_in, c_pool, 1, 0, 1);
    nn::func_t(move |xs, tr| {
        let b1 = xs.apply_t(&b1, tr);
        let b2 = xs.apply_t(&b2_1, tr).apply_t(&b2_2, tr);
        let b3 = xs.apply_t(&b3_1, tr).apply_t(&b3_2, tr).apply_t(&b3_3, tr);
        let bpool = avg_pool3s1(xs).apply_t(&bpool, tr);
        Tensor::cat(&[b1, b2, b3, bpool], 1)
    })
}

fn inception_b(p: nn::Path, c_in: i64) -> impl ModuleT + use<> {
    let b1 = conv_bn(&p / "branch3x3", c_in, 384, 3, 0, 2);
    let b2_1 = conv_bn(&p / "branch3x3dbl_1", c_in, 64, 1, 0, 1);
    let b2_2 = conv_bn(&p / "branch3x3dbl_2", 64, 96, 3, 1, 1);
    let b2_3 = conv_bn(&p / "branch3x3dbl_3", 96, 96, 3, 0, 2);
    nn::func_t(move |xs, tr| {
        let b1 = xs.apply_t(&b1, tr);
        let b2 = xs.apply_t(&b2_1, tr).apply_t(&b2_2, tr).apply_t(&b2_3, tr);
        let bpool = max_pool3s2(xs);
        Tensor::cat(&[b1, b2, bpool], 1)
    })
}

fn inception_c(p: nn::Path, c_in: i64, c7: i64) -> impl ModuleT + use<> {
    let b1 = conv_bn(&p / "branch1x1", c_in, 192, 1, 0, 1);

    let b2_1 = conv_bn(&p / "branch7x7_1", c_in, c7, 1, 0, 1);
    let b2_2 = conv_bn2(&p / "branch7x7_2", c7, c7, [1, 7], [0, 3]);
    let b2_3 = conv_bn2(&p / "branch7x7_3", c7, 192, [7, 1], [3, 0]);

    let b3_1 = conv_bn(&p / "branch7x7dbl_1", c_in, c7, 1, 0, 1);
    let b3_2 = conv_bn2(&p / "branch7x7dbl_2", c7, c7, [7, 1], [3, 0]);
    let b3_3 = conv_bn2(&p / "branch7x7dbl_3", c7, c7, [1, 7], [0, 3]);
    let b3_4 = conv_bn2(&p / "branch7x7dbl_4", c7, c7, [7, 1], [3, 0]);
    let b3_5 = conv_bn2(&p / "branch7x7dbl_5", c7, 192, [1, 7], [0, 3]);

    let bpool = conv_bn(&p / "branch_pool", c_in, 192, 1, 0, 1);

    nn::func_t(move |xs, tr| {
        let b1 = xs.apply_t(&b1, tr);
        let b2 = xs.apply_t(&b2_1, tr).apply_t(&b2_2, tr).apply_t(&b2_3, tr);
        let b3 = xs
            .apply_t(&b3_1, tr)
            .apply_t(&b3_2, tr)
            .apply_t(&b3_3, tr)
            .apply_t(&b3_4, tr)
            .apply_t(&b3_5, tr);
        let bpool = avg_pool3s1(xs).apply_t(&bpool, tr);
        Tensor::cat(&[b1, b2, b3, bpool], 1)
    })
}

fn inception_d(p: nn::Path, c_in: i64) -> impl ModuleT + use<> {
    let b1_1 = conv_bn(&p / "branch3x3_1", c_in, 192, 1, 0, 1);
    let b1_2 = conv_bn(&p / "branch3x3_2", 192, 320, 3, 0, 2);

    let b2_1 = conv_bn(&p / "branch7x7x3_1", c_in, 192, 1, 0, 1);
    let b2_2 = conv_bn2(&p / "branch7x7x3_2", 192, 192, [1, 7], [0, 3]);
    let b2_3 = conv_bn2(&p / "branch7x7x3_3", 192, 192, [7, 1], [3, 0]);
    let b2_4 = conv_bn(&p / "branch7x7x3_4", 192, 192, 3, 0, 2);

    nn::func_t(move |xs, tr| {
        let b1 = xs.apply_t(&b1_1, tr).apply_t(&b1_2, tr);
        let b2 = xs
            .apply_t(&b2_1, tr)
            .apply_t(&b2_2, tr)
            .apply_t(&b2_3, tr)
            .apply_t(&b2_4, tr);
        let bpool = max_pool3s2(xs);
        Tensor::cat(&[b1, b2, bpool], 1)
    })
}

fn inception_e(p: nn::Path, c_in: i64) -> impl ModuleT + use<> {
    let b1 = conv_bn(&p / "branch1x1", c_in, 320, 1, 0, 1);

    let b2_1 = conv_bn(&p / "branch3x3_1", c_in, 384, 1, 0, 1);
    let b2_2a = conv_bn2(&p / "branch3x3_2a", 384, 384, [1, 3], [0, 1]);
    let b2_2b = conv_bn2(&p / "branch3x3_2b", 384, 384, [3, 1], [1, 0]);

    let b3_1 = conv_bn(&p / "branch3x3dbl_1", c_in, 448, 1, 0, 1);
    let b3_2 = conv_bn(&p / "branch3x3dbl_2", 448, 384, 3, 1, 1);
    let b3_3a = conv_bn2(&p / "branch3x3dbl_3a", 384, 384, [1, 3], [0, 1]);
    let b3_3b = conv_bn2(&p / "branch3x3dbl_3b", 384, 384, [3, 1], [1, 0]);

    let bpool = conv_bn(&p / "branch_pool", c_in, 192, 1, 0, 1);

    nn::func_t(move |xs, tr| {
        let b1 = xs.apply_t(&b1, tr);

        let b2 = xs.apply_t(&b2_1, tr);
        let b2 = Tensor::cat(&[b2.apply_t(&b2_2a, tr), b2.apply_t(&b2_2b, tr)], 1);

        let b3 = xs.apply_t(&b3_1, tr).apply_t(&b3_2, tr);
        let b3 = Tensor::cat(&[b3.apply_t(&b3_3a, tr), b3.apply_t(&b3_3b, tr)], 1);

        let bpool = avg_pool3s1(xs).apply_t(&bpool, tr);

        Tensor::cat(&[b1, b2, b3, bpool], 1)
    })
}

fn inception_v3_features(p: &nn::Path) -> impl ModuleT + use<> {
    nn::seq_t()
        .add(conv_bn(p / "Conv2d_1a_3x3", 3, 32, 3, 0, 2))
        .add(conv_bn(p / "Conv2d_2a_3x3", 32, 32, 3, 0, 1))
        .add(conv_bn(p / "Conv2d_2b_3x3", 32, 64, 3, 1, 1))
        .add_fn(max_pool3s2)
        .add(conv_bn(p / "Conv2d_3b_1x1", 64, 80, 1, 0, 1))
        .add(conv_bn(p / "Conv2d_4a_3x3", 80, 192, 3, 0, 1))
        .add_fn(max_pool3s2)
        .add(inception_a(p / "Mixed_5b", 192, 32))
        .add(inception_a(p / "Mixed_5c", 256, 64))
        .add(inception_a(p / "Mixed_5d", 288, 64))
        .add(inception_b(p / "Mixed_6a", 288))
        .add(inception_c(p / "Mixed_6b", 768, 128))
        .add(inception_c(p / "Mixed_6c", 768, 160))
        .add(inception_c(p / "Mixed_6d", 768, 160))
        .add(inception_c(p / "Mixed_6e", 768, 192))
        .add(inception_d(p / "Mixed_7a", 768))
        .add(inception_e(p / "Mixed_7b", 1280))
        .add(inception_e(p / "Mixed_7c", 2048))
}

// ---------------------------------------------------------------------------------------
// EfficientNet-B2 (Tan & Le 2019), from tch::vision::efficientnet, made to compute what
// torchvision's `efficientnet_b2` computes (see the module documentation).

/// One MBConv stage: expansion ratio, kernel, stride, input and output channels, layers.
#[derive(Debug, Clone, Copy)]
struct MbConfig {
    expand_ratio: f64,
    kernel: i64,
    stride: i64,
    input_channels: i64,
    out_channels: i64,
    num_layers: usize,
}

/// torchvision's `_make_divisible(v, divisor)`.
fn make_divisible(v: f64, divisor: i64) -> i64 {
    let new_v = i64::max(divisor, (v + divisor as f64 * 0.5) as i64 / divisor * divisor);
    if (new_v as f64) < 0.9 * v {
        new_v + divisor
    } else {
        new_v
    }
}

fn mb_configs(width_mult: f64, depth_mult: f64) -> Vec<MbConfig> {
    let conf = |expand_ratio, kernel, stride, i: i64, o: i64, n: usize| MbConfig {
        expand_ratio,
        kernel,
        stride,
        input_channels: make_divisible(i as f64 * width_mult, 8),
        out_channels: make_divisible(o as f64 * width_mult, 8),
        num_layers: (n as f64 * depth_mult).ceil() as usize,
    };
    vec![
        conf(1., 3, 1, 32, 16, 1),
        conf(6., 3, 2, 16, 24, 2),
        conf(6., 5, 2, 24, 40, 2),
        conf(6., 3, 2, 40, 80, 3),
        conf(6., 5, 1, 80, 112, 3),
        conf(6., 5, 2, 112, 192, 4),
        conf(6., 3, 1, 192, 320, 1),
    ]
}

/// torchvision's `Conv2dNormActivation`: conv (`p.0`, no bias, padding (k−1)/2), batch
/// norm (`p.1`), SiLU unless `activation` is false.
#[derive(Debug)]
struct ConvNormAct {
    conv: nn::Conv2D,
    bn: nn::BatchNorm,
    activation: bool,
}

impl ConvNormAct {
    fn new(p: nn::Path, c_in: i64, c_out: i64, k: i64, stride: i64, groups: i64, activation: bool) -> Self {
        let cfg = nn::ConvConfig {
            stride,
            padding: (k - 1) / 2,
            groups,
            bias: false,
            ..Default::default()
        };
        let conv = nn::conv2d(&p / 0, c_in, c_out, k, cfg);
        let bn = nn::batch_norm2d(&p / 1, c_out, Default::default());
        Self { conv, bn, activation }
    }
}

impl ModuleT for ConvNormAct {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let ys = xs.apply(&self.conv).apply_t(&self.bn, train);
        if self.activation { ys.silu() } else { ys }
    }
}

/// Inverted residual block with squeeze-and-excitation; variables under `p.block`.
#[derive(Debug)]
struct MbConv {
    expand: Option<ConvNormAct>,
    depthwise: ConvNormAct,
    se_fc1: nn::Conv2D,
    se_fc2: nn::Conv2D,
    project: ConvNormAct,
    residual: bool,
    /// Stochastic depth probability (training only, residual blocks only).
    drop_prob: f64,
}

impl MbConv {
    fn new(p: nn::Path, c: MbConfig, drop_prob: f64) -> Self {
        let p = &p / "block";
        let exp = make_divisible(c.input_channels as f64 * c.expand_ratio, 8);
        let expand = (exp != c.input_channels).then(|| ConvNormAct::new(&p / 0, c.input_channels, exp, 1, 1, 1, true));
        let i = i64::from(expand.is_some());
        let depthwise = ConvNormAct::new(&p / i, exp, exp, c.kernel, c.stride, exp, true);
        let squeeze = i64::max(1, c.input_channels / 4);
        let se = &p / (i + 1);
        let se_fc1 = nn::conv2d(&se / "fc1", exp, squeeze, 1, Default::default());
        let se_fc2 = nn::conv2d(&se / "fc2", squeeze, exp, 1, Default::default());
        let project = ConvNormAct::new(&p / (i + 2), exp, c.out_channels, 1, 1, 1, false);
        Self {
            expand,
            depthwise,
            se_fc1,
            se_fc2,
            project,
            residual: c.stride == 1 && c.input_channels == c.out_channels,
            drop_prob,
        }
    }
}

impl ModuleT for MbConv {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let ys = match &self.expand {
            Some(expand) => xs.apply_t(expand, train),
            None => xs.shallow_clone(),
        };
        let ys = ys.apply_t(&self.depthwise, train);
        let scale = ys
            .adaptive_avg_pool2d([1, 1])
            .apply(&self.se_fc1)
            .silu()
            .apply(&self.se_fc2)
            .sigmoid();
        let ys = (ys * scale).apply_t(&self.project, train);
        if !self.residual {
            return ys;
        }
        if train && self.drop_prob > 0.0 {
            // torchvision's StochasticDepth(p, "row"): drop the branch per image.
            let survival = 1.0 - self.drop_prob;
            let keep = Tensor::rand([ys.size()[0], 1, 1, 1], (ys.kind(), ys.device()))
                .lt(survival)
                .to_kind(ys.kind())
                / survival;
            ys * keep + xs
        } else {
            ys + xs
        }
    }
}

/// `features.0` … `features.8` of torchvision's EfficientNet.
#[derive(Debug)]
struct EfficientNetFeatures {
    stem: ConvNormAct,
    blocks: Vec<MbConv>,
    last: ConvNormAct,
}

impl EfficientNetFeatures {
    fn b2(p: &nn::Path) -> Self {
        Self::new(p, mb_configs(1.1, 1.2), 0.2)
    }

    fn new(p: &nn::Path, configs: Vec<MbConfig>, stochastic_depth: f64) -> Self {
        let fp = p / "features";
        let stem = ConvNormAct::new(&fp / 0, 3, configs[0].input_channels, 3, 2, 1, true);
        let total: usize = configs.iter().map(|c| c.num_layers).sum();
        let last_in = configs.last().expect("configs").out_channels;
        let stages = configs.len();
        let mut blocks = Vec::with_capacity(total);
        for (stage, c) in configs.into_iter().enumerate() {
            for layer in 0..c.num_layers {
                let c = if layer == 0 {
                    c
                } else {
                    MbConfig {
                        input_channels: c.out_channels,
                        stride: 1,
                        ..c
                    }
                };
                let drop = stochastic_depth * blocks.len() as f64 / total as f64;
                blocks.push(MbConv::new(&fp / (stage + 1) / layer, c, drop));
            }
        }
        let last = ConvNormAct::new(&fp / (stages + 1), last_in, 4 * last_in, 1, 1, 1, true);
        Self { stem, blocks, last }
    }
}

impl ModuleT for EfficientNetFeatures {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut xs = xs.apply_t(&self.stem, train);
        for block in &self.blocks {
            xs = xs.apply_t(block, train);
        }
        xs.apply_t(&self.last, train)
    }
}

// ---------------------------------------------------------------------------------------
// Pretrained weights and freezing.

/// What [`load_pretrained`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Variables copied from the file.
    pub loaded: usize,
    /// Head variables whose shape differs from the file's (e.g. ImageNet's 1000 classes):
    /// left at their fresh initialisation.
    pub reinitialised: Vec<String>,
    /// Variables with no tensor of that name in the file (left as initialised).
    pub missing: Vec<String>,
    /// File tensors with no variable of that name (ignored). PyTorch's BatchNorm
    /// `*.num_batches_tracked` counters are dropped silently and not listed.
    pub unexpected: Vec<String>,
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} tensors loaded, {} head tensors re-initialised, {} variables missing from the file, {} file tensors unused",
            self.loaded,
            self.reinitialised.len(),
            self.missing.len(),
            self.unexpected.len()
        )
    }
}

/// The named tensors of a `.safetensors` or `.ot` (tch `save_multi` / `VarStore::save`)
/// file, on the CPU.
pub fn read_named_tensors(path: &Path) -> anyhow::Result<Vec<(String, Tensor)>> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let tensors = match ext {
        "safetensors" => Tensor::read_safetensors(path),
        "ot" => Tensor::load_multi(path),
        _ => bail!(
            "pretrained weights {}: unsupported file type `.{ext}`; use .safetensors or .ot (tensors named as in torchvision's state_dict)",
            path.display()
        ),
    };
    tensors.with_context(|| format!("cannot read pretrained weights {}", path.display()))
}

fn few(names: &[&str]) -> String {
    const SHOWN: usize = 5;
    let mut s = names.iter().take(SHOWN).copied().collect::<Vec<_>>().join(", ");
    if names.len() > SHOWN {
        s.push_str(&format!(", … ({} in all)", names.len()));
    }
    s
}

/// Copies the tensors of the file at `path` (`.safetensors` or `.ot`) into the variables
/// of `vs` with the same names. A head variable (name starting with `head_prefix.`)
/// whose shape differs from the file's keeps its fresh initialisation; any other shape
/// difference is an error naming the variable and both shapes, and so is a file from
/// which nothing loads (weights of another architecture). Nothing is copied unless the
/// whole load succeeds. Data types and devices are converted to the variables'.
pub fn load_pretrained(vs: &mut nn::VarStore, path: &Path, head_prefix: &str) -> anyhow::Result<LoadReport> {
    let file: BTreeMap<String, Tensor> = read_named_tensors(path)?
        .into_iter()
        .filter(|(name, _)| !name.ends_with(".num_batches_tracked"))
        .collect();
    let vars: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
    let head = format!("{head_prefix}.");
    let mut report = LoadReport::default();
    let mut copies: Vec<(&Tensor, &Tensor)> = Vec::new();
    let mut mismatched: Vec<String> = Vec::new();
    for (name, var) in &vars {
        match file.get(name) {
            None => report.missing.push(name.clone()),
            Some(src) if src.size() == var.size() => copies.push((var, src)),
            Some(_) if name.starts_with(&head) => report.reinitialised.push(name.clone()),
            Some(src) => mismatched.push(format!("{name}: file {:?}, network {:?}", src.size(), var.size())),
        }
    }
    report.unexpected = file.keys().filter(|n| !vars.contains_key(*n)).cloned().collect();
    if copies.is_empty() {
        let in_file: Vec<&str> = file.keys().map(String::as_str).collect();
        let expected: Vec<&str> = vars.keys().map(String::as_str).collect();
        bail!(
            "pretrained weights {}: no tensor fits this network ({} of the {} names match, none with the same shape) — weights of another architecture? The file has {}; the network expects {}",
            path.display(),
            vars.len() - report.missing.len(),
            vars.len(),
            few(&in_file),
            few(&expected)
        );
    }
    if !mismatched.is_empty() {
        bail!(
            "pretrained weights {}: {} tensors have another shape than the network's variable of that name: {}",
            path.display(),
            mismatched.len(),
            mismatched.iter().take(5).cloned().collect::<Vec<_>>().join("; ")
        );
    }
    tch::no_grad(|| -> anyhow::Result<()> {
        for (var, src) in &copies {
            let mut var = var.shallow_clone();
            var.f_copy_(src)
                .with_context(|| format!("cannot copy pretrained weights from {}", path.display()))?;
        }
        Ok(())
    })?;
    report.loaded = copies.len();
    Ok(report)
}

/// Stops training of every variable outside the head (`head_prefix.*`): sets
/// `requires_grad(false)` on them. Returns how many trainable variables it froze
/// (BatchNorm running statistics are not trainable and not counted). Optimisers skip
/// variables without a gradient, so build the optimiser before or after, as convenient.
///
/// BatchNorm still updates its running statistics when the features run with
/// `train = true`; for a fully frozen backbone call `net.head(&net.features(xs, false),
/// true)`.
pub fn freeze_backbone(vs: &nn::VarStore, head_prefix: &str) -> usize {
    let head = format!("{head_prefix}.");
    let mut frozen = 0;
    for (name, var) in vs.variables() {
        if !name.starts_with(&head) && var.requires_grad() {
            let _ = var.set_requires_grad(false);
            frozen += 1;
        }
    }
    frozen
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tch::nn::OptimizerConfig;
    use tch::{Device, Kind, Reduction};

    use super::*;

    /// Values of all variables, by name (CPU copies), for comparisons.
    fn snapshot(vs: &nn::VarStore) -> HashMap<String, Tensor> {
        vs.variables()
            .into_iter()
            .map(|(n, t)| (n, t.detach().to_device(tch::Device::Cpu).copy()))
            .collect()
    }

    /// A side that exercises every layer and keeps the test fast on the CPU.
    fn test_size(arch: &str) -> i64 {
        if arch == "inception_v3" { 80 } else { 32 }
    }

    fn batch(n: i64, size: i64, classes: i64) -> (Tensor, Tensor) {
        let xs = Tensor::rand([n, 1, size, size], (Kind::Float, Device::Cpu));
        let ys = Tensor::rand([n, classes], (Kind::Float, Device::Cpu))
            .gt(0.5)
            .to_kind(Kind::Float);
        (xs, ys)
    }

    fn bce(logits: &Tensor, ys: &Tensor) -> Tensor {
        logits.binary_cross_entropy_with_logits::<Tensor>(ys, None, None, Reduction::Mean)
    }

    struct TempFile(std::path::PathBuf);

    impl TempFile {
        fn new(ext: &str) -> Self {
            static N: AtomicUsize = AtomicUsize::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            Self(std::env::temp_dir().join(format!("pipe-nets-test-{}-{n}.{ext}", std::process::id())))
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn equal(a: &Tensor, b: &Tensor) -> bool {
        a.size() == b.size() && a.equal(b)
    }

    #[test]
    fn nets_every_architecture_trains_two_steps() {
        tch::manual_seed(1);
        for &arch in ARCHITECTURES {
            let t = std::time::Instant::now();
            let vs = nn::VarStore::new(Device::Cpu);
            let net = build(arch, &vs.root(), 5).unwrap();
            assert_eq!(net.arch(), arch);
            let size = test_size(arch);
            assert!(size >= net.min_size());
            let (xs, ys) = batch(2, size, 5);
            let mut opt = nn::Adam::default().build(&vs, 1e-3).unwrap();
            for step in 0..2 {
                let f = net.features(&xs, true);
                assert_eq!(f.dim(), 4, "{arch}: features {:?}", f.size());
                assert_eq!(f.size()[..2], [2, net.channels()], "{arch}: features {:?}", f.size());
                let logits = net.head(&f, true);
                assert_eq!(logits.size(), [2, 5], "{arch}");
                let loss = bce(&logits, &ys);
                let l = loss.double_value(&[]);
                assert!(l.is_finite(), "{arch}: step {step} loss {l}");
                opt.backward_step(&loss);
            }
            // Evaluation mode through the ModuleT interface: same shapes, finite.
            let logits = tch::no_grad(|| net.forward_t(&xs, false));
            assert_eq!(logits.size(), [2, 5], "{arch}");
            assert!(logits.isfinite().all().int64_value(&[]) == 1, "{arch}");
            // The head is where head_prefix says.
            let names = vs.variables();
            let prefix = net.head_prefix();
            assert_eq!(names[&format!("{prefix}.weight")].size(), [5, net.channels()], "{arch}");
            assert_eq!(names[&format!("{prefix}.bias")].size(), [5], "{arch}");
            eprintln!(
                "{arch}: {} variables, 2 steps at {size} px in {:?}",
                names.len(),
                t.elapsed()
            );
        }
    }

    #[test]
    fn nets_min_size_is_the_smallest_that_works() {
        tch::manual_seed(2);
        let _guard = tch::no_grad_guard();
        for &arch in ARCHITECTURES {
            let vs = nn::VarStore::new(Device::Cpu);
            let net = build(arch, &vs.root(), 5).unwrap();
            let m = net.min_size();
            let (xs, _) = batch(2, m, 5);
            let f = net.features(&xs, false);
            assert!(f.size()[2] >= 1 && f.size()[3] >= 1, "{arch} at {m}: {:?}", f.size());
            assert_eq!(net.head(&f, false).size(), [2, 5], "{arch}");
            if m > 1 {
                let (xs, _) = batch(2, m - 1, 5);
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| net.features(&xs, false)));
                assert!(r.is_err(), "{arch} works below its min_size {m}");
            }
        }
    }

    #[test]
    fn nets_tiny_matches_the_previous_network() {
        // The layout `train` used before: same variable names and shapes.
        let vs = nn::VarStore::new(Device::Cpu);
        let net = build("tiny", &vs.root(), 3).unwrap();
        let mut shapes: Vec<(String, Vec<i64>)> = vs.variables().into_iter().map(|(n, t)| (n, t.size())).collect();
        shapes.sort();
        let expected: Vec<(&str, Vec<i64>)> = vec![
            ("bn0.bias", vec![16]),
            ("bn0.running_mean", vec![16]),
            ("bn0.running_var", vec![16]),
            ("bn0.weight", vec![16]),
            ("bn1.bias", vec![32]),
            ("bn1.running_mean", vec![32]),
            ("bn1.running_var", vec![32]),
            ("bn1.weight", vec![32]),
            ("bn2.bias", vec![64]),
            ("bn2.running_mean", vec![64]),
            ("bn2.running_var", vec![64]),
            ("bn2.weight", vec![64]),
            ("conv0.weight", vec![16, 1, 3, 3]),
            ("conv1.weight", vec![32, 16, 3, 3]),
            ("conv2.weight", vec![64, 32, 3, 3]),
            ("head.bias", vec![3]),
            ("head.weight", vec![3, 64]),
        ];
        let shapes: Vec<(&str, Vec<i64>)> = shapes.iter().map(|(n, s)| (n.as_str(), s.clone())).collect();
        assert_eq!(shapes, expected);
        let (xs, _) = batch(2, 16, 3);
        assert_eq!(net.features(&xs, false).size(), [2, 64, 2, 2]);
    }

    #[test]
    fn nets_pretrained_round_trip() {
        tch::manual_seed(3);
        for arch in ["tiny", "densenet121", "efficientnet_b2"] {
            for ext in ["safetensors", "ot"] {
                let src = nn::VarStore::new(Device::Cpu);
                let net = build(arch, &src.root(), 3).unwrap();
                // Running statistics that differ from a fresh network's.
                let (xs, _) = batch(2, test_size(arch), 3);
                let _ = tch::no_grad(|| net.forward_t(&xs, true));
                let file = TempFile::new(ext);
                src.save(&file.0).unwrap();

                let mut dst = nn::VarStore::new(Device::Cpu);
                let net5 = build(arch, &dst.root(), 5).unwrap();
                let prefix = net5.head_prefix();
                let fresh = snapshot(&dst);
                let report = load_pretrained(&mut dst, &file.0, prefix).unwrap();
                let head: Vec<String> = vec![format!("{prefix}.bias"), format!("{prefix}.weight")];
                let mut reinit = report.reinitialised.clone();
                reinit.sort();
                assert_eq!(reinit, head, "{arch} {ext}");
                assert!(
                    report.missing.is_empty() && report.unexpected.is_empty(),
                    "{arch} {ext}: {report:?}"
                );
                assert_eq!(report.loaded, src.len() - 2, "{arch} {ext}");
                let loaded = snapshot(&dst);
                for (name, t) in src.variables() {
                    if head.contains(&name) {
                        assert!(equal(&loaded[&name], &fresh[&name]), "{arch} {ext}: {name} was changed");
                    } else {
                        assert!(equal(&loaded[&name], &t), "{arch} {ext}: {name} not loaded");
                    }
                }
                // Same number of classes: the head loads too.
                let mut same = nn::VarStore::new(Device::Cpu);
                build(arch, &same.root(), 3).unwrap();
                let report = load_pretrained(&mut same, &file.0, prefix).unwrap();
                assert_eq!(
                    (report.loaded, report.reinitialised.len()),
                    (src.len(), 0),
                    "{arch} {ext}"
                );
                let (a, b) = (snapshot(&same), snapshot(&src));
                assert!(b.iter().all(|(n, t)| equal(&a[n], t)), "{arch} {ext}");
            }
        }
    }

    #[test]
    fn nets_pretrained_reports_missing_unexpected_and_bad_shapes() {
        tch::manual_seed(4);
        let src = nn::VarStore::new(Device::Cpu);
        build("tiny", &src.root(), 5).unwrap();
        let mut tensors: Vec<(String, Tensor)> = src
            .variables()
            .into_iter()
            .filter(|(n, _)| n != "bn1.running_var")
            .collect();
        tensors.push((
            "AuxLogits.fc.weight".into(),
            Tensor::zeros([2, 2], (Kind::Float, Device::Cpu)),
        ));
        tensors.push(("bn0.num_batches_tracked".into(), Tensor::from_slice(&[7i64])));
        let file = TempFile::new("safetensors");
        Tensor::write_safetensors(&tensors, &file.0).unwrap();
        let mut dst = nn::VarStore::new(Device::Cpu);
        build("tiny", &dst.root(), 5).unwrap();
        let report = load_pretrained(&mut dst, &file.0, "head").unwrap();
        assert_eq!(report.missing, ["bn1.running_var"]);
        assert_eq!(report.unexpected, ["AuxLogits.fc.weight"]);
        assert_eq!(report.loaded, src.len() - 1);
        assert!(report.reinitialised.is_empty());

        // A backbone tensor of another shape is an error naming it, both shapes and the file.
        let mut tensors: Vec<(String, Tensor)> = src.variables().into_iter().collect();
        for (n, t) in tensors.iter_mut() {
            if n == "conv1.weight" {
                *t = Tensor::zeros([32, 16, 5, 5], (Kind::Float, Device::Cpu));
            }
        }
        Tensor::write_safetensors(&tensors, &file.0).unwrap();
        let before = snapshot(&dst);
        let err = format!("{:#}", load_pretrained(&mut dst, &file.0, "head").unwrap_err());
        assert!(err.contains("conv1.weight"), "{err}");
        assert!(
            err.contains("[32, 16, 5, 5]") && err.contains("[32, 16, 3, 3]"),
            "{err}"
        );
        assert!(err.contains(&file.0.display().to_string()), "{err}");
        // Nothing was copied.
        let after = snapshot(&dst);
        assert!(before.iter().all(|(n, t)| equal(&after[n], t)));

        // Unsupported or unreadable files name the path.
        let bad = TempFile::new("pt");
        std::fs::write(&bad.0, b"x").unwrap();
        let err = format!("{:#}", load_pretrained(&mut dst, &bad.0, "head").unwrap_err());
        assert!(
            err.contains(&bad.0.display().to_string()) && err.contains(".safetensors"),
            "{err}"
        );
        let garbage = TempFile::new("safetensors");
        std::fs::write(&garbage.0, b"not a safetensors file").unwrap();
        let err = format!("{:#}", load_pretrained(&mut dst, &garbage.0, "head").unwrap_err());
        assert!(err.contains(&garbage.0.display().to_string()), "{err}");
    }

    #[test]
    fn nets_pretrained_of_another_architecture_is_rejected() {
        tch::manual_seed(5);
        let src = nn::VarStore::new(Device::Cpu);
        build("resnet50", &src.root(), 1000).unwrap();
        let file = TempFile::new("safetensors");
        src.save(&file.0).unwrap();
        for arch in ["inception_v3", "densenet121", "tiny"] {
            let mut dst = nn::VarStore::new(Device::Cpu);
            let net = build(arch, &dst.root(), 5).unwrap();
            let err = format!(
                "{:#}",
                load_pretrained(&mut dst, &file.0, net.head_prefix()).unwrap_err()
            );
            assert!(err.contains(&file.0.display().to_string()), "{arch}: {err}");
            assert!(err.contains("another architecture"), "{arch}: {err}");
            assert!(
                err.contains("layer1.0.conv1.weight") || err.contains("bn1.weight"),
                "{arch}: {err}"
            );
        }
    }

    #[test]
    fn nets_freeze_backbone_trains_only_the_head() {
        tch::manual_seed(6);
        for arch in ["tiny", "resnet50"] {
            let vs = nn::VarStore::new(Device::Cpu);
            let net = build(arch, &vs.root(), 5).unwrap();
            let trainable = vs.trainable_variables().len();
            let frozen = freeze_backbone(&vs, net.head_prefix());
            assert_eq!(frozen, trainable - 2, "{arch}");
            assert_eq!(freeze_backbone(&vs, net.head_prefix()), 0, "{arch}: already frozen");
            let mut opt = nn::Adam::default().build(&vs, 1e-2).unwrap();
            let before = snapshot(&vs);
            let (xs, ys) = batch(2, 32, 5);
            // features in evaluation mode: BatchNorm statistics stay as they are too.
            let loss = bce(&net.head(&net.features(&xs, false), true), &ys);
            opt.backward_step(&loss);
            let after = snapshot(&vs);
            let head = format!("{}.", net.head_prefix());
            for (name, t) in &before {
                if name.starts_with(&head) {
                    assert!(!equal(&after[name], t), "{arch}: head {name} did not change");
                } else {
                    assert!(equal(&after[name], t), "{arch}: backbone {name} changed");
                }
            }
        }
    }

    #[test]
    fn nets_unknown_architecture_lists_the_known_ones() {
        let vs = nn::VarStore::new(Device::Cpu);
        let err = build("vgg16", &vs.root(), 5).unwrap_err().to_string();
        assert!(err.contains("vgg16") && err.contains("efficientnet_b2"), "{err}");
    }
}
