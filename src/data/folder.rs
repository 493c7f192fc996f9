//! A folder of images (PNG, JPEG), decoded with the `image` crate and fitted to the model's (C, H, W).
//!
//! Layouts, in the order they are recognised:
//! ```text
//! DIR/train/..., DIR/test/...   two splits; each is one of the two layouts below
//! DIR/<class>/*.png             labelled: class index = position of <class> in the sorted subfolder names
//! DIR/*.png                     unlabelled
//! ```
//! - With `train/` and `test/`, the class names come from `train/`; a `test/` subfolder with another name is an
//!   error (a typo would otherwise silently create a class the model never trained on). The test split is
//!   labelled only when both splits are.
//! - Without them, a deterministic 10% is held out as the test split: within each class (or the whole folder when
//!   unlabelled), files are sorted by name and every tenth one (positions 9, 19, 29, ...) goes to test. A class of
//!   2 to 9 images gives its last image; a class of one image gives none.
//! - Files are matched by extension, case-insensitively: `.png`, `.jpg`, `.jpeg`. Other files, hidden files
//!   (starting with `.`) and folders below the class level are ignored.
//! - Colour: 1-channel models get luma (`to_luma8`), 3-channel models get RGB (`to_rgb8`). An image with an alpha
//!   channel is first composited onto black (each channel times alpha / 255), so a transparent background reads
//!   as black, the background of MNIST; then it is fitted and converted like any other.
//! - [`survey_folder`] reads only the headers: the sizes the folder holds and whether any file stores colour,
//!   from which `crate::data::resolve_shape` picks the (C, H, W) a new run trains at.
//! - Size: `Fit::CenterCrop` (the default) scales the image so it covers H x W and cuts the centre, keeping the
//!   aspect ratio; `Fit::Stretch` scales each axis to H x W. Both use a triangle (bilinear) filter.

use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use image::{DynamicImage, ImageDecoder};

use super::dataset::{Dataset, ImageShape, Splits};
use super::error::DataError;
use super::idx::missing_dir;

/// How an image of another size is brought to the model's H x W.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Fit {
    /// Scale to cover H x W keeping the aspect ratio, then cut the centre H x W.
    #[default]
    CenterCrop,
    /// Scale width and height independently to exactly H x W.
    Stretch,
}

/// One in `HOLD_OUT_EVERY` images of a flat folder goes to the test split.
pub const HOLD_OUT_EVERY: usize = 10;

const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// Reads a folder of images into train and test splits of shape (N, C, H, W) = (N, `shape`), see the module
/// documentation for the layouts. `shape.channels` must be 1 or 3.
pub fn load_image_folder(dir: &Path, shape: ImageShape, fit: Fit) -> Result<Splits, DataError> {
    if shape.channels != 1 && shape.channels != 3 {
        return Err(DataError::UnsupportedShape {
            shape,
            reason: "image folders give 1 channel (grayscale) or 3 channels (RGB)".to_string(),
        });
    }
    if shape.height == 0 || shape.width == 0 {
        return Err(DataError::UnsupportedShape {
            shape,
            reason: "height and width must be at least 1".to_string(),
        });
    }
    if !dir.is_dir() {
        return Err(missing_dir(dir));
    }

    let train_dir = dir.join("train");
    let test_dir = dir.join("test");
    if train_dir.is_dir() && test_dir.is_dir() {
        let train_files = list_split(&train_dir)?;
        let test_files = list_split(&test_dir)?;
        let class_names = train_files.class_names.clone();
        let test_labels = match (&test_files.labels, class_names.is_empty()) {
            (Some(test_labels), false) => Some(relabel(test_labels, &test_files.class_names, &class_names, &test_dir)?),
            _ => None,
        };
        if train_files.files.is_empty() {
            return Err(empty_folder(&train_dir));
        }
        if test_files.files.is_empty() {
            return Err(empty_folder(&test_dir));
        }
        let train = decode_all(
            train_dir.display().to_string(),
            &train_files.files,
            train_files.labels,
            &class_names,
            shape,
            fit,
        )?;
        let test = decode_all(
            test_dir.display().to_string(),
            &test_files.files,
            test_labels,
            &class_names,
            shape,
            fit,
        )?;
        return Ok(Splits { train, test });
    }

    let listing = list_split(dir)?;
    if listing.files.is_empty() {
        return Err(empty_folder(dir));
    }
    let (train_positions, test_positions) = hold_out(&listing);
    let pick_files = |positions: &[usize]| positions.iter().map(|&i| listing.files[i].clone()).collect::<Vec<_>>();
    let pick_labels = |positions: &[usize]| {
        listing
            .labels
            .as_ref()
            .map(|labels| positions.iter().map(|&i| labels[i]).collect::<Vec<_>>())
    };
    let train = decode_all(
        format!("{} (train, 90%)", dir.display()),
        &pick_files(&train_positions),
        pick_labels(&train_positions),
        &listing.class_names,
        shape,
        fit,
    )?;
    let test = decode_all(
        format!("{} (test, held-out 10%)", dir.display()),
        &pick_files(&test_positions),
        pick_labels(&test_positions),
        &listing.class_names,
        shape,
        fit,
    )?;
    Ok(Splits { train, test })
}

/// Decodes one image file and fits it to `shape`: (C, H, W) bytes.
pub fn load_image(path: &Path, shape: ImageShape, fit: Fit) -> Result<Vec<u8>, DataError> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    decode_image(&bytes, path, shape, fit)
}

/// The most decoded bytes an image file of `file_bytes` bytes can honestly hold: deflate (PNG) expands at most
/// 1032:1, and a Huffman-coded JPEG spends at least one bit on every 8x8 block of a component (at most 1536:1
/// for RGB output). A header claiming more is a truncated or damaged file, refused before the decoder
/// allocates its pixel buffer (a 69-byte PNG can otherwise make it allocate 256 MB).
fn max_decoded_bytes(file_bytes: usize) -> u64 {
    (file_bytes as u64).saturating_mul(4096).saturating_add(1 << 20)
}

/// Decodes one image file's bytes and fits them to `shape`: (C, H, W) bytes. The format comes from the bytes
/// (their magic number), else from `path`'s extension; `path` is otherwise used only in error messages.
pub fn decode_image(bytes: &[u8], path: &Path, shape: ImageShape, fit: Fit) -> Result<Vec<u8>, DataError> {
    let reader = || {
        let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes));
        if let Ok(format) = image::ImageFormat::from_path(path) {
            reader.set_format(format);
        }
        reader.with_guessed_format().map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })
    };
    let decode_error = |source| DataError::ImageDecode {
        path: path.to_path_buf(),
        source,
    };
    // The header alone first: its claimed size must fit the file.
    let header = reader()?.into_decoder().map_err(decode_error)?;
    let decoded_bytes = header.total_bytes();
    if decoded_bytes > max_decoded_bytes(bytes.len()) {
        let (width, height) = header.dimensions();
        return Err(DataError::ImageHeaderTooLarge {
            path: path.to_path_buf(),
            width,
            height,
            decoded_bytes,
            file_bytes: bytes.len(),
        });
    }
    drop(header);
    let decoded = composite_onto_black(reader()?.decode().map_err(decode_error)?);
    let fitted = fit_image(decoded, shape, fit);
    Ok(to_chw(&fitted, shape))
}

/// An image with alpha as RGB composited onto black: c' = c * alpha / 255 (rounded); others unchanged.
fn composite_onto_black(image: DynamicImage) -> DynamicImage {
    if !image.color().has_alpha() {
        return image;
    }
    let mut rgba = image.to_rgba8();
    for pixel in rgba.pixels_mut() {
        let alpha = pixel[3] as u32;
        for channel in 0..3 {
            pixel[channel] = ((pixel[channel] as u32 * alpha + 127) / 255) as u8;
        }
    }
    DynamicImage::ImageRgba8(rgba).into_rgb8().into()
}

/// What the headers of a folder's images say, read without decoding any pixels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderSurvey {
    /// Each distinct (width, height) with the first file (in sorted order) of that size.
    pub sizes: Vec<((u32, u32), PathBuf)>,
    /// The first file whose colour type holds colour (RGB, RGBA, palette), if any.
    pub colour_example: Option<PathBuf>,
    pub files: usize,
}

/// Reads the header of every image of `dir` (either layout of the module documentation).
pub fn survey_folder(dir: &Path) -> Result<FolderSurvey, DataError> {
    if !dir.is_dir() {
        return Err(missing_dir(dir));
    }
    let (train_dir, test_dir) = (dir.join("train"), dir.join("test"));
    let mut files = Vec::new();
    if train_dir.is_dir() && test_dir.is_dir() {
        files.extend(list_split(&train_dir)?.files);
        files.extend(list_split(&test_dir)?.files);
    } else {
        files.extend(list_split(dir)?.files);
    }
    if files.is_empty() {
        return Err(empty_folder(dir));
    }
    let mut survey = FolderSurvey {
        sizes: Vec::new(),
        colour_example: None,
        files: files.len(),
    };
    for file in files {
        let decoder = image::ImageReader::open(&file)
            .and_then(|reader| reader.with_guessed_format())
            .map_err(|source| DataError::Io {
                path: file.clone(),
                source,
            })?
            .into_decoder()
            .map_err(|source| DataError::ImageDecode {
                path: file.clone(),
                source,
            })?;
        let size = decoder.dimensions();
        if survey.colour_example.is_none() && decoder.color_type().has_color() {
            survey.colour_example = Some(file.clone());
        }
        if !survey.sizes.iter().any(|(known, _)| *known == size) {
            survey.sizes.push((size, file));
        }
    }
    Ok(survey)
}

/// Scales and crops `image` to `shape.width` x `shape.height`.
fn fit_image(image: DynamicImage, shape: ImageShape, fit: Fit) -> DynamicImage {
    let (width, height) = (shape.width as u32, shape.height as u32);
    if image.width() == width && image.height() == height {
        return image;
    }
    match fit {
        Fit::Stretch => image.resize_exact(width, height, FilterType::Triangle),
        Fit::CenterCrop => image.resize_to_fill(width, height, FilterType::Triangle),
    }
}

/// (H, W, C) interleaved pixels -> (C, H, W) planes, with the channel count of `shape`.
fn to_chw(image: &DynamicImage, shape: ImageShape) -> Vec<u8> {
    if shape.channels == 1 {
        // One channel: (H, W) luma is already (1, H, W).
        return image.to_luma8().into_raw();
    }
    let interleaved = image.to_rgb8().into_raw(); // (H, W, 3)
    let plane = shape.height * shape.width;
    let mut planes = vec![0u8; 3 * plane];
    for (pixel, rgb) in interleaved.chunks_exact(3).enumerate() {
        for (channel, &value) in rgb.iter().enumerate() {
            planes[channel * plane + pixel] = value;
        }
    }
    planes
}

/// The image files of one split, sorted, with their class (when the split has class subfolders).
struct Listing {
    files: Vec<PathBuf>,
    /// (files.len(),) indices into `class_names`; `None` for a flat folder.
    labels: Option<Vec<u32>>,
    /// Sorted subfolder names that hold images; empty for a flat folder.
    class_names: Vec<String>,
}

/// Lists `dir`: image files directly inside it, or image files one level down in class subfolders.
fn list_split(dir: &Path) -> Result<Listing, DataError> {
    let (loose_files, subfolders) = read_dir_sorted(dir)?;
    let mut class_names = Vec::new();
    let mut files = Vec::new();
    let mut labels = Vec::new();
    for subfolder in &subfolders {
        let (class_files, _) = read_dir_sorted(subfolder)?;
        if class_files.is_empty() {
            continue;
        }
        let label = class_names.len() as u32;
        class_names.push(file_name(subfolder));
        labels.extend(std::iter::repeat_n(label, class_files.len()));
        files.extend(class_files);
    }
    if class_names.is_empty() {
        return Ok(Listing {
            files: loose_files,
            labels: None,
            class_names,
        });
    }
    if let Some(loose_example) = loose_files.first() {
        let subfolder_example = subfolders
            .iter()
            .find(|subfolder| class_names.contains(&file_name(subfolder)))
            .cloned()
            .unwrap_or_default();
        return Err(DataError::MixedLayout {
            path: dir.to_path_buf(),
            loose_example: loose_example.clone(),
            subfolder_example,
        });
    }
    Ok(Listing {
        files,
        labels: Some(labels),
        class_names,
    })
}

/// The image files and the visible subfolders directly in `dir`, each sorted by name.
fn read_dir_sorted(dir: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>), DataError> {
    let io_error = |source| DataError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut image_files = Vec::new();
    let mut subfolders = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error)? {
        let path = entry.map_err(io_error)?.path();
        if file_name(&path).starts_with('.') {
            continue;
        }
        if path.is_dir() {
            subfolders.push(path);
        } else if is_image_file(&path) {
            image_files.push(path);
        }
    }
    image_files.sort();
    subfolders.sort();
    Ok((image_files, subfolders))
}

fn is_image_file(path: &Path) -> bool {
    path.extension()
        .and_then(|extension| extension.to_str())
        .is_some_and(|extension| IMAGE_EXTENSIONS.contains(&extension.to_ascii_lowercase().as_str()))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Maps the test split's labels (indices into its own class names) to indices into the training class names.
fn relabel(
    test_labels: &[u32],
    test_class_names: &[String],
    train_class_names: &[String],
    test_dir: &Path,
) -> Result<Vec<u32>, DataError> {
    let mut train_index_of_test_class = Vec::with_capacity(test_class_names.len());
    for class in test_class_names {
        match train_class_names.iter().position(|train_class| train_class == class) {
            Some(index) => train_index_of_test_class.push(index as u32),
            None => {
                return Err(DataError::UnknownClass {
                    path: test_dir.join(class),
                    class: class.clone(),
                    train_classes: train_class_names.to_vec(),
                })
            }
        }
    }
    Ok(test_labels
        .iter()
        .map(|&label| train_index_of_test_class[label as usize])
        .collect())
}

/// Positions (into `listing.files`) of the training and the held-out test images; see the module documentation.
fn hold_out(listing: &Listing) -> (Vec<usize>, Vec<usize>) {
    // Group positions by class; a flat folder is one group. Files of a class are contiguous and sorted.
    let mut groups: Vec<Vec<usize>> = Vec::new();
    match &listing.labels {
        None => groups.push((0..listing.files.len()).collect()),
        Some(labels) => {
            groups.resize(listing.class_names.len(), Vec::new());
            for (position, &label) in labels.iter().enumerate() {
                groups[label as usize].push(position);
            }
        }
    }
    let mut train = Vec::new();
    let mut test = Vec::new();
    for group in groups {
        let count = group.len();
        for (rank, position) in group.into_iter().enumerate() {
            let held_out = if count >= HOLD_OUT_EVERY {
                rank % HOLD_OUT_EVERY == HOLD_OUT_EVERY - 1
            } else {
                count >= 2 && rank == count - 1
            };
            if held_out {
                test.push(position);
            } else {
                train.push(position);
            }
        }
    }
    (train, test)
}

/// Decodes `files` in order into a dataset (N, C, H, W).
fn decode_all(
    name: String,
    files: &[PathBuf],
    labels: Option<Vec<u32>>,
    class_names: &[String],
    shape: ImageShape,
    fit: Fit,
) -> Result<Dataset, DataError> {
    let mut pixels = Vec::with_capacity(files.len() * shape.numel());
    for file in files {
        pixels.extend(load_image(file, shape, fit)?);
    }
    let class_names = if labels.is_some() {
        class_names.to_vec()
    } else {
        Vec::new()
    };
    Ok(Dataset::new(name, shape, pixels, labels, class_names))
}

fn empty_folder(dir: &Path) -> DataError {
    DataError::EmptyFolder {
        path: dir.to_path_buf(),
        hint: "put .png or .jpg files in it, directly or in one subfolder per class \
               (or give a directory holding the IDX files of the MNIST layout)"
            .to_string(),
    }
}
