//! The protobuf wire format, written by hand: tags, varints, fixed-width numbers and nested
//! messages whose one-byte length grows in place.

/// Protobuf wire types.
pub(super) const VARINT: u32 = 0;
pub(super) const FIXED64: u32 = 1;
pub(super) const LEN: u32 = 2;
pub(super) const FIXED32: u32 = 5;

/// Appends protobuf fields. Proto3 scalars at their default are left out, as every encoder
/// does; a nested message is written with a one-byte length that grows in place when the
/// message turns out longer than 127 bytes.
#[derive(Default)]
pub(super) struct Writer {
    pub(super) buf: Vec<u8>,
}

impl Writer {
    pub(super) fn varint(&mut self, mut value: u64) {
        if value < 0x80 {
            self.buf.push(value as u8);
            return;
        }
        while value >= 0x80 {
            self.buf.push((value & 0x7f) as u8 | 0x80);
            value >>= 7;
        }
        self.buf.push(value as u8);
    }

    pub(super) fn tag(&mut self, field: u32, wire_type: u32) {
        self.varint(u64::from(field << 3 | wire_type));
    }

    pub(super) fn raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    pub(super) fn varint_field(&mut self, field: u32, value: u64) {
        self.tag(field, VARINT);
        self.varint(value);
    }

    pub(super) fn len_field(&mut self, field: u32, bytes: &[u8]) {
        self.tag(field, LEN);
        self.varint(bytes.len() as u64);
        self.buf.extend_from_slice(bytes);
    }

    pub(super) fn uint(&mut self, field: u32, value: u64) {
        if value != 0 {
            self.varint_field(field, value);
        }
    }

    pub(super) fn fixed64(&mut self, field: u32, value: u64) {
        if value != 0 {
            self.tag(field, FIXED64);
            self.buf.extend_from_slice(&value.to_le_bytes());
        }
    }

    pub(super) fn fixed32(&mut self, field: u32, value: u32) {
        if value != 0 {
            self.tag(field, FIXED32);
            self.buf.extend_from_slice(&value.to_le_bytes());
        }
    }

    pub(super) fn bytes(&mut self, field: u32, bytes: &[u8]) {
        if !bytes.is_empty() {
            self.len_field(field, bytes);
        }
    }

    pub(super) fn string(&mut self, field: u32, s: &str) {
        self.bytes(field, s.as_bytes());
    }

    pub(super) fn message(&mut self, field: u32, body: impl FnOnce(&mut Self)) {
        self.tag(field, LEN);
        let at = self.buf.len();
        self.buf.push(0);
        body(self);
        let len = self.buf.len() - at - 1;
        // The one byte held back becomes as many as the length needs: one move of the body.
        let width = varint_width(len as u64);
        if width > 1 {
            self.buf.splice(at..at, std::iter::repeat_n(0, width - 1));
        }
        if let Some(slot) = self.buf.get_mut(at..at + width) {
            let mut rest = len as u64;
            for byte in slot.iter_mut() {
                *byte = (rest & 0x7f) as u8 | if rest >= 0x80 { 0x80 } else { 0 };
                rest >>= 7;
            }
        }
    }
}

/// How many bytes `value` takes as a varint.
pub(super) fn varint_width(value: u64) -> usize {
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}
