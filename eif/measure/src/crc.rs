//! The CRC-32 an EIF header carries over the rest of the file (versions 2 and later).

/// CRC-32/ISO-HDLC (the "IEEE" CRC of zlib and Ethernet): reflected polynomial
/// 0xEDB88320, initial value and final XOR 0xFFFFFFFF. The image-format crate uses
/// `crc::CRC_32_ISO_HDLC` when writing and `crc32::IEEE` when reading: the same CRC.
#[derive(Clone, Debug)]
pub struct Crc32 {
    state: u32,
}

/// Byte-wise lookup table for [`Crc32`], built at compile time.
const CRC32_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

impl Crc32 {
    /// A fresh CRC.
    pub fn new() -> Crc32 {
        Crc32 { state: 0xFFFF_FFFF }
    }

    /// Feeds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        let mut c = self.state;
        for &b in bytes {
            c = CRC32_TABLE[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8);
        }
        self.state = c;
    }

    /// The CRC of everything fed so far.
    pub fn finish(&self) -> u32 {
        self.state ^ 0xFFFF_FFFF
    }
}

impl Default for Crc32 {
    fn default() -> Self {
        Crc32::new()
    }
}
