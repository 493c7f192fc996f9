//! Datasets: IDX files, image folders, the embedded default, batching.
