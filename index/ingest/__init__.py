"""Getting points in at scale: sources, batch builds streamed into sealed segments, Ray embedding."""
