"""Dataset converters: LeRobot v3 <-> diffusion_policy zarr <-> robomimic HDF5, and ROS bag / MCAP import.

Every converter reads into :class:`Episode` objects (one episode in memory at a time) and writes
from them, so any input pairs with any output::

    from robolearn.data.convert import convert, ConvertOptions
    summary = convert("demo.hdf5", "demo_lerobot", to="lerobot")
    summary = convert("run.mcap", "run_lerobot", to="lerobot",
                      options=ConvertOptions(mapping="datasets/ros_franka_mapping.yaml"))
    print(summary.line())

The key mappings of each format are documented in its module (``zarr_format``,
``robomimic_format`` and ``robomimic_export``, ``ros_mapping``); ``robomimic_h5`` reads the raw
layout of robomimic-style HDF5 files (robomimic, robosuite, LIBERO).
"""

from robolearn.data.convert.core import ConvertOptions, ConvertSummary, convert, open_source, write_episodes
from robolearn.data.convert.detect import FORMATS, OUTPUT_FORMATS, detect_format
from robolearn.data.convert.episode import ConversionError, Episode, EpisodeSource, InMemorySource
from robolearn.data.convert.ros_mapping import RosMapping, load_mapping, parse_mapping

__all__ = [
    "FORMATS",
    "OUTPUT_FORMATS",
    "ConversionError",
    "ConvertOptions",
    "ConvertSummary",
    "Episode",
    "EpisodeSource",
    "InMemorySource",
    "RosMapping",
    "convert",
    "detect_format",
    "load_mapping",
    "open_source",
    "parse_mapping",
    "write_episodes",
]
