//! CPU twin of `shaders/reduce.wgsl`.

/// out (C) = sum over r of x (R, C)
pub fn sum_rows(x: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    (0..cols).map(|c| (0..rows).map(|r| x[r * cols + c]).sum()).collect()
}

/// out (R) = sum over c of x (R, C)
pub fn sum_cols(x: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    (0..rows).map(|r| x[r * cols..(r + 1) * cols].iter().sum()).collect()
}

/// The sum of all values.
pub fn sum_all(x: &[f64]) -> f64 {
    x.iter().sum()
}
