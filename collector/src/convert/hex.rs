//! Lower-case hex for trace and span ids.

use datafusion::arrow::array::StringBuilder;

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Appends the hex form of `bytes` to `out`.
pub fn push_hex(out: &mut String, bytes: &[u8]) {
    out.reserve(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0x0f) as usize] as char);
    }
}

/// Appends the hex form of `bytes` to `out` as one value. Ids (up to 32
/// bytes) are spelled out on the stack: an id per column per span, a
/// `String` each was a tenth of the conversion's allocations.
pub fn append_hex(out: &mut StringBuilder, bytes: &[u8]) {
    let mut digits = [0u8; 64];
    if bytes.len() <= 32 {
        for (pair, b) in digits.chunks_exact_mut(2).zip(bytes) {
            pair[0] = DIGITS[(b >> 4) as usize];
            pair[1] = DIGITS[(b & 0x0f) as usize];
        }
        // Hex digits are ASCII, so this always succeeds.
        if let Ok(text) = std::str::from_utf8(&digits[..bytes.len() * 2]) {
            out.append_value(text);
            return;
        }
    }
    out.append_value(hex(bytes));
}

pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    push_hex(&mut out, bytes);
    out
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Array, StringBuilder};

    #[test]
    fn hex_is_lower_case() {
        assert_eq!(super::hex(&[0x00, 0xab, 0x0f, 0xf0]), "00ab0ff0");
    }

    #[test]
    fn appended_hex_is_the_same_for_ids_of_any_length() {
        let ids: [&[u8]; 4] = [&[], &[0xab; 8], &[0x0f; 32], &[0xf0; 33]];
        let mut builder = StringBuilder::new();
        for id in ids {
            super::append_hex(&mut builder, id);
        }
        let column = builder.finish();
        for (row, id) in ids.iter().enumerate() {
            assert!(column.is_valid(row));
            assert_eq!(column.value(row), super::hex(id));
        }
    }
}
