//! Mock Nitro platform.
