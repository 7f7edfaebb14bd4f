//! Which container a chip lives in.
//!
//! A tenant's containers are numbered slots `0, 1, 2, …`; each holds at most
//! `sessions_per_container` chips. **The rule:** a new chip goes to the lowest-numbered slot
//! that has room; when every slot is full, it opens the next slot. Once placed, a chip stays in
//! its slot (the caller records the slot with the chip): its WhatsApp session state lives in
//! that slot's volume, so moving it would mean a new QR scan. Removing chips leaves holes that
//! the next new chips fill, lowest slot first, so containers stay packed without moving anyone.

use crate::Error;

/// The placement rule for one pool.
///
/// A tenant's containers are slots `0, 1, 2, …` of at most `sessions_per_container` chips each.
/// A new chip goes to the lowest-numbered slot with room, else opens the next slot; a placed
/// chip stays where it is (its session state lives in that slot's volume).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    sessions_per_container: u32,
}

impl Placement {
    /// A rule with at most `sessions_per_container` chips per container (at least 1).
    pub fn new(sessions_per_container: u32) -> Result<Self, Error> {
        if sessions_per_container == 0 {
            return Err(Error::InvalidConfig(
                "sessions_per_container must be at least 1".into(),
            ));
        }
        Ok(Self {
            sessions_per_container,
        })
    }

    /// The cap.
    pub fn sessions_per_container(&self) -> u32 {
        self.sessions_per_container
    }

    /// The slot for a new chip, given how many chips each existing slot already holds
    /// (`occupancy[slot]`).
    pub fn place(&self, occupancy: &[u32]) -> u32 {
        occupancy
            .iter()
            .position(|&n| n < self.sessions_per_container)
            .unwrap_or(occupancy.len()) as u32
    }

    /// How many containers `chips` chips need at least (0 chips need none).
    pub fn containers_needed(&self, chips: u32) -> u32 {
        chips.div_ceil(self.sessions_per_container)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_the_lowest_slot_with_room_then_opens_the_next() {
        let p = Placement::new(2).unwrap();
        assert_eq!(p.place(&[]), 0);
        assert_eq!(p.place(&[1]), 0);
        assert_eq!(p.place(&[2]), 1);
        assert_eq!(p.place(&[2, 2, 1]), 2);
        assert_eq!(
            p.place(&[2, 0, 2]),
            1,
            "a hole left by removed chips is filled first"
        );
        assert_eq!(p.containers_needed(0), 0);
        assert_eq!(p.containers_needed(5), 3);
        assert!(Placement::new(0).is_err());
    }
}
