//! `locus-tracker`: the tracker role's binary.

fn main() {}
