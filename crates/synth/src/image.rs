//! A chest radiograph phantom: torso, lungs, heart, spine and ribs, with a visible sign
//! for each abnormal region, so a model trained on the synthetic hospital has a real
//! signal to learn (and a broken pipeline does not).
//!
//! Signs: chest wall — a broken, displaced rib with a bright fixation plate; pleura — a
//! basal fluid level (bright, flat-topped) in one lung; parenchyma — round opacities in
//! the lungs; cardiac — an enlarged heart; other — a dark air crescent under the right
//! hemidiaphragm.

use pipe_core::rng::Rng;

/// Attenuation image in [0, 1], row-major, `size`×`size`; brighter = denser.
pub fn chest(rng: &mut Rng, size: usize, findings: [bool; 5]) -> Vec<f32> {
    let n = size as f32;
    let mut img = vec![0.0f32; size * size];
    // Per-patient anatomy variation.
    let lung_w = 0.17 + 0.02 * rng.f64() as f32;
    let lung_h = 0.30 + 0.03 * rng.f64() as f32;
    let heart_scale = if findings[3] { 1.45 } else { 1.0 };
    let heart_r = (0.10 + 0.015 * rng.f64() as f32) * heart_scale;
    let fluid_side = if rng.chance(0.5) { -1.0 } else { 1.0 };
    let blobs: Vec<(f32, f32, f32)> = (0..rng.range(2, 5))
        .map(|_| {
            let side = if rng.chance(0.5) { -1.0 } else { 1.0 };
            (
                0.5 + side * (0.13 + 0.08 * rng.f64() as f32),
                0.35 + 0.3 * rng.f64() as f32,
                0.03 + 0.025 * rng.f64() as f32,
            )
        })
        .collect();
    let broken_rib = rng.range(2, 6) as f32;
    let broken_side = if rng.chance(0.5) { -1.0 } else { 1.0 };
    for y in 0..size {
        for x in 0..size {
            let (u, v) = ((x as f32 + 0.5) / n, (y as f32 + 0.5) / n);
            // Torso: soft tissue ellipse.
            let torso = ((u - 0.5) / 0.42).powi(2) + ((v - 0.55) / 0.5).powi(2) < 1.0;
            let mut a: f32 = if torso { 0.55 } else { 0.05 };
            // Lungs: two dark ellipses.
            let mut in_lung = false;
            for side in [-1.0f32, 1.0] {
                let cx = 0.5 + side * 0.2;
                if ((u - cx) / lung_w).powi(2) + ((v - 0.48) / lung_h).powi(2) < 1.0 {
                    in_lung = true;
                }
            }
            if in_lung {
                a = 0.22;
            }
            // Ribs: bright arcs across each lung field.
            if torso {
                for k in 0..8 {
                    let ry = 0.24 + k as f32 * 0.065 + 0.05 * ((u - 0.5) * 6.0).cos();
                    let side = if u < 0.5 { -1.0 } else { 1.0 };
                    let on_rib = (v - ry).abs() < 0.008 + 0.5 / n && (u - 0.5).abs() > 0.06;
                    let broken = findings[0] && k as f32 == broken_rib && side == broken_side;
                    let gap = broken && ((u - 0.5) * side - 0.3).abs() < 0.03;
                    let displaced = broken && ((u - 0.5) * side) > 0.3 && (v - ry - 0.02).abs() < 0.008 + 0.5 / n;
                    if (on_rib && !gap && !(broken && (u - 0.5) * side > 0.3)) || displaced {
                        a += 0.18;
                    }
                    if broken && ((u - 0.5) * side - 0.3).abs() < 0.05 && (v - ry).abs() < 0.02 + 0.5 / n {
                        a = 0.98; // fixation plate over the fracture
                    }
                }
            }
            // Spine and mediastinum.
            if (u - 0.5).abs() < 0.04 && torso {
                a = a.max(0.8);
            }
            // Heart: bright disc left of centre (patient's left = image right).
            if ((u - 0.54) / (heart_r * 1.2)).powi(2) + ((v - 0.62) / heart_r).powi(2) < 1.0 {
                a = a.max(0.78);
            }
            if in_lung && findings[1] {
                let cx = 0.5 + fluid_side * 0.2;
                if (u - cx).abs() < lung_w && v > 0.62 {
                    a = 0.85; // fluid level with a flat top
                }
            }
            if in_lung && findings[2] {
                for &(bx, by, br) in &blobs {
                    if (u - bx).powi(2) + (v - by).powi(2) < br * br {
                        a = a.max(0.75);
                    }
                }
            }
            if findings[4] && (u - 0.32).abs() < 0.1 && (v - 0.8).abs() < 0.015 + 1.0 / n {
                a = 0.02; // free air under the diaphragm
            }
            img[y * size + x] = a;
        }
    }
    // Quantum noise.
    for p in &mut img {
        *p = (*p + 0.02 * rng.normal() as f32).clamp(0.0, 1.0);
    }
    img
}
