//! Buffers lent to connections while they have something to say. An
//! idle client holds no buffer (a few hundred bytes of state instead of
//! kilobytes); the buffers of clients that went idle are kept per thread
//! for the next ones, so the busy path does not pay for malloc and free.

use std::cell::RefCell;

use bytes::BytesMut;

/// The size of a lent buffer; messages larger than it grow their own.
pub const SIZE: usize = 8 * 1024;

/// Buffers kept per thread for reuse: enough for the clients one thread
/// serves at the same moment; beyond, a burst allocates and frees.
const KEEP: usize = 16;

thread_local! {
    static FREE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer with at least `SIZE` bytes of room.
pub fn take() -> BytesMut {
    FREE.with(|f| f.borrow_mut().pop())
        .unwrap_or_else(|| BytesMut::with_capacity(SIZE))
}

/// Gives a buffer back. Its room is reclaimed in place (the messages read
/// from it were consumed, not split off, so it is the sole owner of its
/// allocation); buffers grown far beyond `SIZE` by a big message, or with
/// no allocation, are not kept.
pub fn give(mut buf: BytesMut) {
    buf.clear();
    if !buf.try_reclaim(SIZE) || buf.capacity() > 8 * SIZE {
        return;
    }
    FREE.with(|f| {
        let mut free = f.borrow_mut();
        if free.len() < KEEP {
            free.push(buf);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_for_the_next_borrower() {
        let mut b = take();
        assert!(b.capacity() >= SIZE && b.is_empty());
        b.extend_from_slice(b"hello");
        let ptr = b.as_ptr();
        bytes::Buf::advance(&mut b, 5); // consumed, as the session does
        give(b);
        let again = take();
        assert!(again.is_empty());
        assert_eq!(again.as_ptr(), ptr, "the same allocation is reused");
        give(BytesMut::with_capacity(64 * SIZE)); // too big: freed
        give(BytesMut::new()); // no allocation: nothing to keep
        give(BytesMut::with_capacity(64)); // too small to lend: freed
        assert_eq!(take().capacity(), SIZE, "only lendable buffers were kept");
    }
}
