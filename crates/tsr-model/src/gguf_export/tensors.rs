//! The weights of an exported file: llama.cpp's tensor names, the Q/K row permutation, and the
//! F32 / F16 / Q8_0 encodings.

use tch::{Device, Kind, Tensor};

use crate::error::ModelError;

/// ggml tensor type ids.
pub(super) const GGML_F32: u32 = 0;
pub(super) const GGML_F16: u32 = 1;
pub(super) const GGML_Q8_0: u32 = 8;

pub(super) const QK8_0: usize = 32;

/// llama.cpp's name of a Hugging Face tensor (the inverse of [`crate::gguf::hf_name`]).
pub fn gguf_name(hf: &str) -> Option<String> {
    match hf {
        "model.embed_tokens.weight" => return Some("token_embd.weight".into()),
        "model.norm.weight" => return Some("output_norm.weight".into()),
        "lm_head.weight" => return Some("output.weight".into()),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, suffix) = rest.rsplit_once('.')?;
    let g = match module {
        "input_layernorm" => "attn_norm",
        "post_attention_layernorm" => "ffn_norm",
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        _ => return None,
    };
    Some(format!("blk.{layer}.{g}.{suffix}"))
}

/// llama.cpp's conversion permutation of Q/K rows (weights or biases): HF row `h*2d + i*d + j`
/// goes to row `h*2d + 2j + i`. `None` when the rows do not split into `heads` heads.
pub fn permute_rows(values: &[f32], shape: &[usize], heads: usize) -> Option<Vec<f32>> {
    crate::gguf::hf_map::reorder_rows(values, shape, heads, true)
}

pub(super) fn tensor_values(t: &Tensor) -> Result<Vec<f32>, ModelError> {
    let t = t
        .detach()
        .f_to_device(Device::Cpu)?
        .f_to_kind(Kind::Float)?
        .contiguous()
        .f_flatten(0, -1)?;
    Ok(Vec::<f32>::try_from(&t)?)
}

pub(super) fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

pub(super) fn f16_bytes(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
        .collect()
}

/// ggml's reference Q8_0 quantisation (`quantize_row_q8_0_ref`): per block of 32, the scale
/// `d = max|x| / 127` (stored as f16) and `round(x / d)` as i8 (rounding half away from zero).
pub fn quantize_q8_0(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() / QK8_0 * 34);
    for block in values.chunks(QK8_0) {
        let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&half::f16::from_f32(d).to_le_bytes());
        out.extend(block.iter().map(|&x| (x * id).round() as i8 as u8));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::{hf_name, unpermute_rows};

    #[test]
    fn names_and_permutation_invert_the_reader() {
        for hf in [
            "model.embed_tokens.weight",
            "model.norm.weight",
            "lm_head.weight",
            "model.layers.3.self_attn.q_proj.bias",
            "model.layers.0.mlp.down_proj.weight",
            "model.layers.11.post_attention_layernorm.weight",
        ] {
            assert_eq!(hf_name(&gguf_name(hf).unwrap()).as_deref(), Some(hf));
        }
        assert_eq!(gguf_name("model.rotary.inv_freq"), None);
        let (rows, cols, heads) = (16usize, 3usize, 2usize);
        let w: Vec<f32> = (0..rows * cols).map(|v| v as f32).collect();
        let p = permute_rows(&w, &[rows, cols], heads).unwrap();
        assert_ne!(p, w);
        assert_eq!(
            unpermute_rows(&p, &[rows as i64, cols as i64], heads).unwrap(),
            w
        );
        assert!(permute_rows(&w, &[rows, cols], 3).is_none());
    }

    #[test]
    fn q8_0_blocks_dequantize_within_about_half_a_step() {
        let values: Vec<f32> = (0..64).map(|i| ((i as f32) * 0.37).sin() * 3.0).collect();
        let q = quantize_q8_0(&values);
        assert_eq!(q.len(), 2 * 34);
        let back = crate::dequant::dequantize(crate::dequant::GgmlType::Q8_0, &q, 64).unwrap();
        for (block, (orig, deq)) in values.chunks(32).zip(back.chunks(32)).enumerate() {
            let amax = orig.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = half::f16::from_f32(amax / 127.0).to_f32();
            // Half a step, plus up to 127 times the scale's f16 rounding (2^-11 relative).
            for (a, b) in orig.iter().zip(deq) {
                assert!(
                    (a - b).abs() <= 0.5 * d + 127.0 * d / 2048.0,
                    "block {block}: {a} vs {b}"
                );
            }
            // The largest value maps to +-127.
            assert!(q[block * 34 + 2..block * 34 + 34]
                .iter()
                .any(|&b| b as i8 == 127 || b as i8 == -127));
        }
        // An all-zero block has scale 0 and zero quants.
        assert!(quantize_q8_0(&[0.0; 32]).iter().all(|&b| b == 0));
    }
}
