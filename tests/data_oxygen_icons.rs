//! A real colour dataset that can be had offline: the 32x32 PNG icons of Debian's `oxygen-icon-theme` (about
//! 1,500 RGBA icons in ten category folders; a few are 22x22 or an animation strip). .ci/run installs it.

use std::path::Path;

use latent::data::{self, Fit, ImageShape};

mod common;
use common::{latent, latent_command};

const ICONS: &str = "/usr/share/icons/oxygen/base/32x32";

#[test]
fn oxygen_icons_train_at_32x32_in_colour() {
    let dir = Path::new(ICONS);
    assert!(
        dir.is_dir(),
        "{ICONS} does not exist: install the icons with `apt-get install -y oxygen-icon-theme` (Debian/Ubuntu \
         package), then run the tests again"
    );
    // A few icons are not 32x32: without --image-size the folder is refused, naming the sizes and the flag.
    let error = data::resolve_shape(Some(dir), None, false).unwrap_err().to_string();
    assert!(
        error.contains("not all one size") && error.contains("--image-size 32"),
        "{error}"
    );
    let shape = data::resolve_shape(Some(dir), Some(32), false).unwrap();
    assert_eq!(shape, ImageShape::new(3, 32, 32));
    let splits = data::load_dir(dir, shape, Fit::default()).unwrap();
    let total = splits.train.len() + splits.test.len();
    assert!((1_400..=1_700).contains(&total), "{total} icons");
    assert_eq!(splits.train.class_names().len(), 10, "{:?}", splits.train.class_names());
    // Colour, and transparent backgrounds composited onto black: most icons' corner pixel is black.
    let colourful = (0..splits.train.len())
        .filter(|&i| {
            let image = splits.train.image(i);
            (0..1024).any(|p| image[p] != image[1024 + p] || image[1024 + p] != image[2048 + p])
        })
        .count();
    assert!(colourful > splits.train.len() / 2, "{colourful} colour icons");
    let black_corners = (0..splits.train.len())
        .filter(|&i| (0..3).all(|c| splits.train.image(i)[c * 1024] == 0))
        .count();
    assert!(black_corners > splits.train.len() / 2, "{black_corners} black corners");

    // Two steps of the vae through the command line, sampled in colour.
    let work = tempfile::tempdir().unwrap();
    let run = work.path().join("vae");
    let run_s = run.to_str().unwrap();
    let output = latent_command(&["train", "vae", "--data", ICONS, "--run", run_s, "--steps", "1"]);
    assert!(!output.status.success(), "mixed sizes need --image-size");
    latent(&[
        "train",
        "vae",
        "--data",
        ICONS,
        "--image-size",
        "32",
        "--run",
        run_s,
        "--steps",
        "2",
        "--batch",
        "32",
    ]);
    latent(&["sample", "--run", run_s, "--n", "8"]);
    let grid = image::open(run.join("grid.png")).unwrap();
    assert_eq!(grid.color(), image::ColorType::Rgb8);
    assert_eq!((grid.width(), grid.height()), (8 * 34 + 2, 34 + 2));
}
