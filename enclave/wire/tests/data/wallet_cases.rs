// Wallet inputs that the parent's session check, the enclave's mint and the dev backend
// stand-in each run through their own entry point, asserting that each accepts exactly
// what `agentkeys_wire::Wallet::parse` accepts, in the same normal form. One Rust
// expression (a `&[&str]`), read with `include!`.
&[
    // Accepted.
    "0xabcdef0123456789abcdef0123456789abcdef01",
    "0xABCDEF0123456789ABCDEF0123456789ABCDEF01",
    "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
    "0x0000000000000000000000000000000000000000",
    // Upper-case prefix: refused.
    "0XABCDEF0123456789abcdef0123456789abcdef01",
    "0Xabcdef0123456789abcdef0123456789abcdef01",
    // Empty, prefix only, no prefix.
    "",
    "0x",
    "0X",
    "abcdef0123456789abcdef0123456789abcdef01",
    "abcdef0123456789abcdef0123456789abcdef0123",
    // 39 and 41 digits.
    "0xabcdef0123456789abcdef0123456789abcdef0",
    "0xabcdef0123456789abcdef0123456789abcdef012",
    // Non-hex characters.
    "0xgbcdef0123456789abcdef0123456789abcdef01",
    "0xabcdef0123456789abcdef0123456789abcdef0z",
    "0x0xabcdef0123456789abcdef0123456789abcdef",
    "0xabcdef0123456789abcdef0123456789abcdef0\u{0}",
    // Surrounding whitespace.
    " 0xabcdef0123456789abcdef0123456789abcdef01",
    "0xabcdef0123456789abcdef0123456789abcdef01 ",
    "0xabcdef0123456789abcdef0123456789abcdef01\n",
    "0X abcdef0123456789abcdef0123456789abcdef",
    // Unicode digits and letters (40 characters after the prefix, more bytes).
    "0xabcdef0123456789abcdef0123456789abcdef0\u{661}",
    "0xabcdef0123456789abcdef0123456789abcdef0\u{ff11}",
    "0xabcdef0123456789abcdef0123456789abcdef0\u{e9}",
    "\u{ff10}xabcdef0123456789abcdef0123456789abcdef01",
]
