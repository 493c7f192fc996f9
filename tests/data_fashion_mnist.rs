//! Reads the full Fashion-MNIST from Debian's `dataset-fashion-mnist` package (60,000 + 10,000 images, IDX gzip).
//!
//! This test fails, on purpose, when the package is not installed: CI installs it, and a test that passes without
//! its data would check nothing.

use std::path::Path;

use latent::data::{load_dir, Fit, ImageShape};

const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

#[test]
fn fashion_mnist_from_the_debian_package() {
    let dir = Path::new(FASHION_MNIST_DIR);
    assert!(
        dir.is_dir(),
        "{FASHION_MNIST_DIR} does not exist: install the data with `apt-get install -y dataset-fashion-mnist` \
         (Debian/Ubuntu package), then run the tests again"
    );
    let splits = match load_dir(dir, ImageShape::MNIST, Fit::default()) {
        Ok(splits) => splits,
        Err(error) => panic!("reading {FASHION_MNIST_DIR}: {error}"),
    };

    assert_eq!(splits.train.len(), 60_000);
    assert_eq!(splits.test.len(), 10_000);
    assert_eq!(splits.train.shape(), ImageShape::new(1, 28, 28));
    assert_eq!(splits.test.shape(), ImageShape::new(1, 28, 28));
    assert_eq!(splits.train.pixels().len(), 60_000 * 784);

    // Fashion-MNIST is balanced: 10 classes, 6,000 training and 1,000 test images each.
    assert_eq!(splits.train.num_classes(), 10);
    assert_eq!(splits.train.label_histogram(), vec![6_000; 10]);
    assert_eq!(splits.test.label_histogram(), vec![1_000; 10]);

    // Real photographs of clothes: the full byte range is used, and most of each image is background (0).
    let pixels = splits.train.pixels();
    assert_eq!(pixels.iter().min(), Some(&0));
    assert_eq!(pixels.iter().max(), Some(&255));
    let mean = pixels.iter().map(|&byte| byte as f64).sum::<f64>() / pixels.len() as f64 / 255.0;
    assert!(
        (0.25..0.35).contains(&mean),
        "mean intensity {mean}, Fashion-MNIST's is about 0.286"
    );
}
