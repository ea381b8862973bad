"""firmware-sim: a simulator of dust collectors and their controllers, served over Modbus."""
