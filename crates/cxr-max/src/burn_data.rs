//! Burn data loading (feature `burn`): a [`Dataset`] of grouped samples (one image, its
//! prompt, all teacher trajectories) and a [`Batcher`] producing `[B, 1, H, W]` images.

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::prelude::{Backend, Tensor};
use burn::tensor::TensorData;

use crate::dataset::Item;
use crate::images::ImageLoader;
use crate::{Findings, Trajectory};

/// One grouped sample with its decoded image.
#[derive(Debug, Clone)]
pub struct CxrItem {
    /// The image id.
    pub dicom_id: String,
    /// `size × size` grayscale values in [0, 1].
    pub pixels: Vec<f32>,
    /// Image side.
    pub size: u32,
    /// The prompt.
    pub prompt: Option<String>,
    /// Every teacher trajectory.
    pub trajectories: Vec<Trajectory>,
    /// Ground-truth labels, when known.
    pub labels: Option<Findings>,
}

/// The items of a validated [`crate::dataset::Dataset`], images decoded on access.
#[derive(Debug, Clone)]
pub struct CxrDataset {
    items: Vec<Item>,
    loader: ImageLoader,
}

impl CxrDataset {
    /// A dataset over `items`, decoding images with `loader`.
    pub fn new(items: Vec<Item>, loader: ImageLoader) -> Self {
        CxrDataset { items, loader }
    }
}

impl Dataset<CxrItem> for CxrDataset {
    /// The item at `index`; `None` past the end, or when its image cannot be decoded any more
    /// (validated data sets have decodable images; the failure is logged).
    fn get(&self, index: usize) -> Option<CxrItem> {
        let item = self.items.get(index)?;
        match self.loader.load(&item.image) {
            Ok(img) => Some(CxrItem {
                dicom_id: item.sample.dicom_id.clone(),
                pixels: img.pixels,
                size: img.size,
                prompt: item.sample.prompt.clone(),
                trajectories: item.sample.trajectories.clone(),
                labels: item.labels,
            }),
            Err(e) => {
                tracing::warn!(index, error = %e, "image no longer decodable");
                None
            }
        }
    }

    fn len(&self) -> usize {
        self.items.len()
    }
}

/// A batch: images `[B, 1, H, W]` and the items' text and labels (without pixels).
#[derive(Debug, Clone)]
pub struct CxrBatch<B: Backend> {
    /// Images.
    pub images: Tensor<B, 4>,
    /// The items, pixels emptied.
    pub items: Vec<CxrItem>,
}

/// Stacks items into a [`CxrBatch`].
#[derive(Debug, Clone, Copy, Default)]
pub struct CxrBatcher;

impl<B: Backend> Batcher<B, CxrItem, CxrBatch<B>> for CxrBatcher {
    /// # Panics
    /// If items have different image sizes (a loader produces one size).
    fn batch(&self, items: Vec<CxrItem>, device: &B::Device) -> CxrBatch<B> {
        let n = items.len();
        let size = items.first().map_or(0, |i| i.size) as usize;
        let mut data = Vec::with_capacity(n * size * size);
        let mut rest = Vec::with_capacity(n);
        for mut item in items {
            assert_eq!(
                item.size as usize, size,
                "every image of a batch has the same size"
            );
            data.append(&mut item.pixels);
            rest.push(item);
        }
        let images = Tensor::from_data(TensorData::new(data, [n, 1, size, size]), device);
        CxrBatch {
            images,
            items: rest,
        }
    }
}
