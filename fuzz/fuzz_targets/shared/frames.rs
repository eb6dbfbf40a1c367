//! Input shaping shared by the targets that feed frames with a virtio-net header.

use switch::VnetHdr;

/// Makes the IP length and the checksum offsets agree with an untagged IPv4/IPv6 frame.
pub fn fix_up(f: &mut [u8], hdr: &mut VnetHdr) {
    if f.len() < 54 {
        return;
    }
    let (l4, proto) = match (f[12], f[13]) {
        (0x08, 0x00) => {
            let ihl = (f[14] & 0x0f) as usize * 4;
            let tot = (f.len() - 14) as u16;
            f[16..18].copy_from_slice(&tot.to_be_bytes());
            (14 + ihl, f[23])
        }
        (0x86, 0xdd) => {
            let plen = (f.len() - 54) as u16;
            f[18..20].copy_from_slice(&plen.to_be_bytes());
            (54, f[20])
        }
        _ => return,
    };
    hdr.csum_start = l4 as u16;
    hdr.csum_offset = if proto == 6 { 16 } else { 6 };
}
