//! Lower-case hex for trace and span ids.

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Appends the hex form of `bytes` to `out`.
pub fn push_hex(out: &mut String, bytes: &[u8]) {
    out.reserve(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0x0f) as usize] as char);
    }
}

pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    push_hex(&mut out, bytes);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_is_lower_case() {
        assert_eq!(super::hex(&[0x00, 0xab, 0x0f, 0xf0]), "00ab0ff0");
    }
}
