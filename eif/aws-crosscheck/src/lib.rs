//! Helpers of the cross-check between `agentkeys-eif` and AWS's EIF code
//! (`tests/aws_crosscheck.rs`): the inputs of an EIF (a Linux kernel, the static enclave
//! binary, ramdisks as cpio archives) and the check that a binary is statically linked.
//!
//! Nothing here panics on its input: every malformed file is an `Err` naming the check.

use std::path::{Path, PathBuf};

/// The Debian package that provides a kernel for the cross-check (an x86_64 bzImage in
/// `/boot/vmlinuz-*`): the cloud flavour is the smallest amd64 kernel Debian builds
/// (about 26 MB to download).
pub const KERNEL_PACKAGE: &str = "linux-image-cloud-amd64";

/// Environment variable naming a kernel image to use instead of `/boot/vmlinuz-*`.
pub const KERNEL_ENV: &str = "AGENTKEYS_TEST_KERNEL";

/// Environment variable naming the enclave binary to pack (default: the musl release
/// build under the main workspace's target directory).
pub const ENCLAVE_BIN_ENV: &str = "AGENTKEYS_ENCLAVE_BIN";

/// The target triple of the binary the EIF packs (eif/inputs.env, `RUST_TARGET`).
pub const ENCLAVE_TARGET: &str = "x86_64-unknown-linux-musl";

/// Offset and value of the boot protocol magic "HdrS" in an x86 bzImage (the Linux x86
/// boot protocol, Documentation/arch/x86/boot.rst: `header` at 0x202).
const BZIMAGE_MAGIC_OFFSET: usize = 0x202;
const BZIMAGE_MAGIC: &[u8; 4] = b"HdrS";

/// True when `bytes` start like an x86 bzImage (boot protocol header present).
pub fn is_bzimage(bytes: &[u8]) -> bool {
    bytes.get(BZIMAGE_MAGIC_OFFSET..BZIMAGE_MAGIC_OFFSET + 4) == Some(BZIMAGE_MAGIC.as_slice())
}

/// The kernel image to build test EIFs with: `$AGENTKEYS_TEST_KERNEL`, else the
/// last (by name) `/boot/vmlinuz-*`. The error says which package to install.
pub fn find_kernel() -> Result<PathBuf, String> {
    find_kernel_in(
        std::env::var_os(KERNEL_ENV).map(PathBuf::from),
        Path::new("/boot"),
    )
}

/// [`find_kernel`] with the override and the directory given.
pub fn find_kernel_in(over: Option<PathBuf>, boot: &Path) -> Result<PathBuf, String> {
    let hint = format!(
        "install a Debian kernel (apt-get install {KERNEL_PACKAGE}) or set {KERNEL_ENV} to an x86_64 bzImage"
    );
    if let Some(p) = over {
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!(
                "{KERNEL_ENV}={} is not a file: {hint}",
                p.display()
            ))
        };
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(boot)
        .map_err(|e| {
            format!(
                "no Linux kernel image: cannot list {} ({e}): {hint}",
                boot.display()
            )
        })?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
        .collect();
    found.sort();
    found
        .pop()
        .ok_or_else(|| format!("no Linux kernel image in {}: {hint}", boot.display()))
}

/// The enclave binary to pack: `$AGENTKEYS_ENCLAVE_BIN`, else the musl release build in
/// `target_dir`. The error says how to build it.
pub fn find_enclave_binary(target_dir: &Path) -> Result<PathBuf, String> {
    let build = format!(
        "build it with: cargo build --locked --release -p agentkeys-enclave --no-default-features --target {ENCLAVE_TARGET} (scripts/check-scripts.sh does, then runs this test), or set {ENCLAVE_BIN_ENV}"
    );
    let p = match std::env::var_os(ENCLAVE_BIN_ENV) {
        Some(p) => PathBuf::from(p),
        None => target_dir
            .join(ENCLAVE_TARGET)
            .join("release")
            .join("agentkeys-enclave"),
    };
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!("no enclave binary at {}: {build}", p.display()))
    }
}

/// What [`check_static_elf`] found in a static binary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StaticElf {
    /// The binary is position independent (ET_DYN: a static-pie, with a PT_DYNAMIC
    /// segment holding only relocation entries and no DT_NEEDED).
    pub pie: bool,
}

// ELF constants, from the System V ABI (gABI) and `elf.h`.
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
const EM_X86_64: u16 = 62;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
/// Size of an Elf64_Ehdr, an Elf64_Phdr and an Elf64_Dyn.
const EHDR_LEN: usize = 64;
const PHDR_LEN: usize = 56;
const DYN_LEN: usize = 16;

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(off..off.checked_add(2)?)?.try_into().ok()?,
    ))
}
fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(off..off.checked_add(4)?)?.try_into().ok()?,
    ))
}
fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(off..off.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// Checks that `bytes` is a statically linked x86_64 ELF executable: no program
/// interpreter (PT_INTERP) and no needed shared library (DT_NEEDED in PT_DYNAMIC), as
/// `readelf -l` / `readelf -d` would show. Errors name what was found.
pub fn check_static_elf(bytes: &[u8]) -> Result<StaticElf, String> {
    let short = || "truncated ELF file".to_string();
    if bytes.get(..4) != Some(b"\x7fELF".as_slice()) {
        return Err("not an ELF file (no \\x7fELF magic)".into());
    }
    if bytes.get(4) != Some(&ELFCLASS64) || bytes.get(5) != Some(&ELFDATA2LSB) {
        return Err("not a 64-bit little-endian ELF file".into());
    }
    if bytes.len() < EHDR_LEN {
        return Err(short());
    }
    let e_type = u16_at(bytes, 16).ok_or_else(short)?;
    let e_machine = u16_at(bytes, 18).ok_or_else(short)?;
    if e_machine != EM_X86_64 {
        return Err(format!("ELF machine {e_machine}, not x86_64 ({EM_X86_64})"));
    }
    let pie = match e_type {
        ET_EXEC => false,
        ET_DYN => true,
        t => return Err(format!("ELF type {t} is not an executable")),
    };
    let phoff = usize::try_from(u64_at(bytes, 32).ok_or_else(short)?).map_err(|_| short())?;
    let phentsize = usize::from(u16_at(bytes, 54).ok_or_else(short)?);
    let phnum = usize::from(u16_at(bytes, 56).ok_or_else(short)?);
    if phentsize < PHDR_LEN {
        return Err(format!("program header entries of {phentsize} bytes"));
    }
    for i in 0..phnum {
        let ph = phoff
            .checked_add(i.checked_mul(phentsize).ok_or_else(short)?)
            .ok_or_else(short)?;
        let p_type = u32_at(bytes, ph).ok_or_else(short)?;
        if p_type == PT_INTERP {
            return Err("dynamically linked: it has a program interpreter (PT_INTERP)".into());
        }
        if p_type == PT_DYNAMIC {
            let off = usize::try_from(
                u64_at(bytes, ph.checked_add(8).ok_or_else(short)?).ok_or_else(short)?,
            )
            .map_err(|_| short())?;
            let size = usize::try_from(
                u64_at(bytes, ph.checked_add(32).ok_or_else(short)?).ok_or_else(short)?,
            )
            .map_err(|_| short())?;
            let end = off.checked_add(size).ok_or_else(short)?;
            let dynamic = bytes.get(off..end).ok_or_else(short)?;
            for entry in dynamic.chunks_exact(DYN_LEN) {
                let tag = u64_at(entry, 0).ok_or_else(short)?;
                if tag == DT_NULL {
                    break;
                }
                if tag == DT_NEEDED {
                    return Err("dynamically linked: it needs a shared library (DT_NEEDED)".into());
                }
            }
        }
    }
    Ok(StaticElf { pie })
}

/// One member of a cpio archive.
#[derive(Clone, Debug)]
pub struct CpioEntry {
    /// Path inside the archive, without a leading slash.
    pub name: String,
    /// File mode including the type bits (0o100000 regular file, 0o040000 directory).
    pub mode: u32,
    /// Contents (empty for a directory).
    pub data: Vec<u8>,
}

impl CpioEntry {
    /// A directory.
    pub fn dir(name: &str) -> CpioEntry {
        CpioEntry {
            name: name.into(),
            mode: 0o040_755,
            data: vec![],
        }
    }

    /// A regular file with permission bits `perm`.
    pub fn file(name: &str, perm: u32, data: Vec<u8>) -> CpioEntry {
        CpioEntry {
            name: name.into(),
            mode: 0o100_000 | (perm & 0o7777),
            data,
        }
    }
}

/// A cpio archive in the "newc" format the Linux kernel unpacks as an initramfs
/// (Documentation/driver-api/early-userspace/buffer-format.rst): for each member a
/// 110-byte ASCII header ("070701" and 13 eight-digit hex fields), the NUL-terminated
/// name padded to 4 bytes, the data padded to 4 bytes; then the "TRAILER!!!" member.
/// Owner 0:0, mtime 0, so the archive depends on the entries only. Errors on a member
/// larger than the format's 32-bit size field.
pub fn cpio_newc(entries: &[CpioEntry]) -> Result<Vec<u8>, String> {
    fn pad4(out: &mut Vec<u8>) {
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
    }
    fn member(
        out: &mut Vec<u8>,
        ino: u32,
        name: &str,
        mode: u32,
        data: &[u8],
    ) -> Result<(), String> {
        let size = u32::try_from(data.len())
            .map_err(|_| format!("cpio member {name} is larger than 4 GiB"))?;
        let namesize = u32::try_from(name.len() + 1)
            .map_err(|_| format!("cpio member name {name} is too long"))?;
        let nlink = if mode & 0o170_000 == 0o040_000 { 2 } else { 1 };
        // ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
        let fields = [ino, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, namesize, 0];
        out.extend_from_slice(b"070701");
        for f in fields {
            out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        pad4(out);
        out.extend_from_slice(data);
        pad4(out);
        Ok(())
    }
    let mut out = vec![];
    for (i, e) in entries.iter().enumerate() {
        let ino = u32::try_from(i + 1).map_err(|_| "too many cpio members".to_string())?;
        member(&mut out, ino, &e.name, e.mode, &e.data)?;
    }
    member(&mut out, 0, "TRAILER!!!", 0, &[])?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn cpio_layout_matches_the_newc_format() {
        let a = cpio_newc(&[CpioEntry::file("init", 0o755, b"abc".to_vec())]).unwrap();
        // Header of the first member: magic, ino 1, mode 0100755, ..., filesize 3, namesize 5.
        assert_eq!(&a[..6], b"070701");
        assert_eq!(&a[6..14], b"00000001");
        assert_eq!(&a[14..22], b"000081ed");
        assert_eq!(&a[54..62], b"00000003");
        assert_eq!(&a[94..102], b"00000005");
        // name "init\0" at 110, padded to 116; data at 116, padded to 120.
        assert_eq!(&a[110..115], b"init\0");
        assert_eq!(&a[116..119], b"abc");
        assert_eq!(&a[120..126], b"070701");
        assert!(a.windows(10).any(|w| w == b"TRAILER!!!"));
        assert_eq!(a.len() % 4, 0);
        // Deterministic, and one byte of data changes the archive.
        assert_eq!(
            a,
            cpio_newc(&[CpioEntry::file("init", 0o755, b"abc".to_vec())]).unwrap()
        );
        assert_ne!(
            a,
            cpio_newc(&[CpioEntry::file("init", 0o755, b"abd".to_vec())]).unwrap()
        );
    }

    #[test]
    fn static_elf_check_refuses_malformed_and_dynamic_files() {
        assert!(check_static_elf(b"").unwrap_err().contains("not an ELF"));
        assert!(check_static_elf(b"\x7fELF\x01\x01")
            .unwrap_err()
            .contains("64-bit"));
        assert!(check_static_elf(b"\x7fELF\x02\x01\x01")
            .unwrap_err()
            .contains("truncated"));
        // A header whose program headers point past the end of the file.
        let mut h = vec![0u8; 64];
        h[..6].copy_from_slice(b"\x7fELF\x02\x01");
        h[16..18].copy_from_slice(&ET_EXEC.to_le_bytes());
        h[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        h[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        h[54..56].copy_from_slice(&56u16.to_le_bytes());
        h[56..58].copy_from_slice(&1u16.to_le_bytes());
        assert!(check_static_elf(&h).unwrap_err().contains("truncated"));
        // No program headers at all: nothing dynamic.
        h[56..58].copy_from_slice(&0u16.to_le_bytes());
        assert_eq!(check_static_elf(&h), Ok(StaticElf { pie: false }));
        // A PT_INTERP segment.
        h[32..40].copy_from_slice(&64u64.to_le_bytes());
        h[56..58].copy_from_slice(&1u16.to_le_bytes());
        let mut f = h.clone();
        f.extend_from_slice(&[0u8; 56]);
        f[64..68].copy_from_slice(&PT_INTERP.to_le_bytes());
        assert!(check_static_elf(&f).unwrap_err().contains("PT_INTERP"));
        // A PT_DYNAMIC segment with a DT_NEEDED entry, then one with only DT_NULL.
        let mut f = h.clone();
        f.extend_from_slice(&[0u8; 56]);
        f[64..68].copy_from_slice(&PT_DYNAMIC.to_le_bytes());
        f[72..80].copy_from_slice(&120u64.to_le_bytes());
        f[96..104].copy_from_slice(&32u64.to_le_bytes());
        let mut needed = f.clone();
        needed.extend_from_slice(&DT_NEEDED.to_le_bytes());
        needed.extend_from_slice(&[0u8; 24]);
        assert!(check_static_elf(&needed).unwrap_err().contains("DT_NEEDED"));
        let mut none = f.clone();
        none.extend_from_slice(&[0u8; 32]);
        assert_eq!(check_static_elf(&none), Ok(StaticElf { pie: false }));
    }

    #[test]
    fn kernel_lookup_names_the_package_when_there_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path();
        let err = find_kernel_in(None, empty).unwrap_err();
        assert!(
            err.contains(KERNEL_PACKAGE) && err.contains(KERNEL_ENV),
            "{err}"
        );
        let err = find_kernel_in(Some(empty.join("missing")), empty).unwrap_err();
        assert!(err.contains(KERNEL_PACKAGE), "{err}");
        std::fs::write(empty.join("vmlinuz-6.1.0-1-cloud-amd64"), b"k1").unwrap();
        std::fs::write(empty.join("vmlinuz-6.1.0-2-cloud-amd64"), b"k2").unwrap();
        std::fs::write(empty.join("config-6.1.0-2-cloud-amd64"), b"c").unwrap();
        assert_eq!(
            find_kernel_in(None, empty).unwrap(),
            empty.join("vmlinuz-6.1.0-2-cloud-amd64")
        );
    }
}
