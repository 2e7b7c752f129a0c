-- money rollups sum many orders, and one order may total 10^18 minor units (100 lines of 10,000
-- units at the highest product price), so a day's revenue or a customer's lifetime value can
-- pass bigint (about 9.2 * 10^18). numeric(38, 0) holds any such sum exactly, whole minor units
-- only, and still fits the i128 the readers parse it into.
alter table kpi_daily
    alter column placed_minor type numeric(38, 0),
    alter column revenue_minor type numeric(38, 0);

alter table kpi_product_daily
    alter column revenue_minor type numeric(38, 0);

alter table customers
    alter column revenue_minor type numeric(38, 0);
